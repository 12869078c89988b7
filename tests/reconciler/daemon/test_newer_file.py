"""A file saved during a pass: in force for the balancer at once, for the reconciler at the
next safe point (no further change of the old file starts; a pull under way is abandoned and
resumed by the next pass; any other change under way finishes)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from reconciler.config import DesiredState
from reconciler.daemon.loop import Daemon
from reconciler.daemon.run import Service
from reconciler.daemon.status import status_json
from tests.reconciler.plan.test_engine import FakeTarget
from simulator import Simulator, Timing

SLOW, SMALL = "llama3.2:1b", "all-minilm:22m"


def text(url: str, max_concurrent: int, models: list[str]) -> str:
    out = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\npoll_interval = "0.2s"\n'
           '[reconcile]\ninterval = "60s"\nstatus_listen = "127.0.0.1:0"\n'
           f'[[nodes]]\nname = "gpu-1"\nurl = "{url}"\nmax_concurrent = {max_concurrent}\n')
    return out + "".join(f'[models."{m}"]\n' for m in models)


async def test_edit_during_a_pull_reaches_the_balancer_at_once_and_the_pull_makes_way(tmp_path: Path) -> None:
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
            # the pull under way is abandoned (Ollama resumes it), so the pass ends long before
            # the ~3 s pull would have
            await asyncio.wait_for(_until(lambda: svc.daemon.counters.passes >= 1), 1.5)
            assert svc.daemon.last_pass is not None and svc.daemon.last_pass["preempted"] == 2
            await asyncio.wait_for(_until(lambda: svc.daemon.counters.passes >= 2
                                          and not svc.daemon.running_pass), 30)
            pulls = [r for r in node.write_requests() if r.path == "/api/pull"]
            assert pulls[0].client_disconnected                 # the abandoned pull
            assert SLOW in node.installed_models()             # resumed by the next pass
            assert SMALL not in [r.body["model"] for r in pulls]
        finally:
            await svc.stop()


async def _until(check) -> None:  # type: ignore[no-untyped-def]
    while not check():
        await asyncio.sleep(0.05)


async def test_a_change_under_way_finishes_and_status_shows_the_newer_file_waiting(tmp_path: Path) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text('version = 1\n[models."m:1"]\n[models."n:1"]\n[models."o:1"]\n')
    have: dict[str, object] = {}

    applying = asyncio.Event()

    class Target(FakeTarget):
        async def apply(self, change, progress):  # type: ignore[no-untyped-def]
            applying.set()
            await super().apply(change, progress)

    def factory(state: DesiredState) -> list[FakeTarget]:      # one change at a time, 0.5 s each
        return [Target("fake", have, {name: 1 for name in state.models}, delay=0.5)]

    daemon = Daemon(file, factory=factory)
    first = asyncio.create_task(daemon.run_pass("start"))
    # m:1 is being applied (waited for: on a loaded machine the pass may start late)
    await asyncio.wait_for(applying.wait(), 10)
    file.write_text('version = 1\n[models."m:1"]\n[models."p:1"]\n')
    await daemon.file_changed()
    assert status_json(daemon, None)["newer_file_waiting"] is True
    report = await asyncio.wait_for(first, 2)
    assert report is not None and have == {"m:1": 1}  # m:1 finished; n:1 and o:1 never started
    assert daemon.last_pass is not None and daemon.last_pass["preempted"] == 2 and daemon.last_pass["ok"]
    assert status_json(daemon, None)["newer_file_waiting"] is False
    await daemon.run_pass("file change")
    assert have == {"m:1": 1, "p:1": 1}
