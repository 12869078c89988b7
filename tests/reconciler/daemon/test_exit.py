"""An idle daemon exits promptly on SIGTERM or Ctrl-C; a second Ctrl-C forces the exit while
streams still drain."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from simulator import Simulator, Timing
from tests.reconciler.daemon.test_process import start_daemon


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


def write(file: Path, url: str) -> None:
    file.write_text('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\n[reconcile]\nstatus_listen = "127.0.0.1:0"\n'
                    f'[[nodes]]\nname = "gpu-1"\nurl = "{url}"\n[models."llama3.2:1b"]\n')


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_an_idle_daemon_exits_within_half_a_second(sim: Simulator, tmp_path: Path, sig: int) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    write(file, node.url)
    daemon = await start_daemon(file)
    try:
        url = re.search(r"http://\S+", (await daemon.wait_log("balancer listening on"))["message"]).group(0)  # type: ignore[union-attr]
        status = re.search(r"http://[0-9.:]+", (await daemon.wait_log("status on"))["message"]).group(0)  # type: ignore[union-attr]
        await daemon.wait_log(r"pass \(start\) ok")
        async with httpx.AsyncClient(timeout=10) as client:     # idle keep-alive connections stay open
            assert (await client.get(url + "/api/tags")).status_code == 200
            assert (await client.get(status + "/status")).status_code == 200
            await asyncio.sleep(0.3)       # idle: nothing but the watcher and the polls
            t0 = time.monotonic()
            daemon.proc.send_signal(sig)
            assert await asyncio.wait_for(daemon.proc.wait(), 10) == 0
            took = time.monotonic() - t0
        assert took < 0.5, f"an idle daemon took {took:.2f} s to exit"
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def test_a_second_ctrl_c_forces_the_exit(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing(time_scale=1.0, gen_tps=5.0))
    node.reply_tokens = 200           # a 40 s answer; the drain would wait for it (up to 20 s)
    file = tmp_path / "desired_state.toml"
    write(file, node.url)
    daemon = await start_daemon(file)
    try:
        url = re.search(r"http://\S+", (await daemon.wait_log("balancer listening on"))["message"]).group(0)  # type: ignore[union-attr]
        await daemon.wait_log(r"pass \(start\) ok")
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("POST", url + "/api/generate", json={"model": "llama3.2:1b", "prompt": "x"}) as r:
                lines = r.aiter_lines()
                await lines.__anext__()
                daemon.proc.send_signal(signal.SIGINT)
                await daemon.wait_log("stopping")
                t0 = time.monotonic()
                daemon.proc.send_signal(signal.SIGINT)
                code = await asyncio.wait_for(daemon.proc.wait(), 10)
                assert time.monotonic() - t0 < 2
                assert code == 130      # forced: the stream was cut
        assert daemon.proc.stderr is not None
        rest = (await daemon.proc.stderr.read()).decode()
        assert all(json.loads(line) for line in rest.splitlines()), f"not a clean exit: {rest[-2000:]}"
        assert "exiting now" in rest
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
