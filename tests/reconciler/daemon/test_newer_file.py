"""A file saved during a long pull: in force for the balancer at once, for the reconciler at
the next safe point (the pull under way finishes; no further change of the old file starts)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from reconciler.daemon.run import Service
from simulator import Simulator, Timing

SLOW, SMALL = "llama3.2:1b", "all-minilm:22m"


def text(url: str, max_concurrent: int, models: list[str]) -> str:
    out = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\npoll_interval = "0.2s"\n'
           '[reconcile]\ninterval = "60s"\nstatus_listen = "127.0.0.1:0"\n'
           f'[[nodes]]\nname = "gpu-1"\nurl = "{url}"\nmax_concurrent = {max_concurrent}\n')
    return out + "".join(f'[models."{m}"]\n' for m in models)


async def test_edit_during_a_pull_reaches_the_balancer_at_once_and_preempts_the_pass(tmp_path: Path) -> None:
    async with Simulator() as sim:
        # ~3 s for the 1.3 GB model
        node = await sim.add_node("gpu-1", timing=Timing(pull_bps=4e8, load_delay=0.0))
        file = tmp_path / "desired_state.toml"
        file.write_text(text(node.url, 1, [SLOW, SMALL]))
        svc = Service(file, drain_timeout=1)
        assert await svc.start()
        assert svc.balancer is not None
        try:
            async def pulling() -> str | None:
                pulls = [r.body["model"] for r in node.write_requests() if r.path == "/api/pull"]
                return pulls[0] if pulls else None
            deadline = time.monotonic() + 10
            while (first := await pulling()) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert first == SLOW      # the file's order; SMALL waits for the one pull slot
            tmp = tmp_path / "new.toml"
            tmp.write_text(text(node.url, 3, [SLOW]))        # drops the model not yet pulled
            tmp.replace(file)
            saved = time.monotonic()
            while svc.balancer.states()[0].max_concurrent != 3:
                assert time.monotonic() - saved < 2, "the balancer did not get the new limit at once"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient() as client:
                data = (await client.get(svc.status_url + "/status")).json()
            assert data["pass_running"] and data["newer_file_waiting"] is True
            await asyncio.wait_for(_until(lambda: svc.daemon.counters.passes >= 2
                                          and not svc.daemon.running_pass), 30)
            assert SLOW in node.installed_models()      # the pull under way finished
            assert SMALL not in [r.body["model"] for r in node.write_requests() if r.path == "/api/pull"]
        finally:
            await svc.stop()


async def _until(check) -> None:  # type: ignore[no-untyped-def]
    while not check():
        await asyncio.sleep(0.05)
