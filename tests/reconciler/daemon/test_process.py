"""`ollafleet daemon` as a process: JSON logs, SIGHUP, and SIGTERM letting a stream finish."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from simulator import Simulator, Timing


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []  # type: ignore[type-arg]

    async def wait_log(self, pattern: str, timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
        async def read() -> dict:  # type: ignore[type-arg]
            for entry in self.lines:
                if re.search(pattern, entry["message"]):
                    return entry
            assert self.proc.stderr is not None
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"daemon exited before logging {pattern!r}")
                entry = json.loads(raw)      # every line is one JSON object
                self.lines.append(entry)
                if re.search(pattern, entry["message"]):
                    return entry
        return await asyncio.wait_for(read(), timeout)


async def start_daemon(file: Path) -> Daemon:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reconciler", "daemon", str(file), "--log-format", "json", "--drain-timeout", "20",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "SECRET_TOKEN": "s3cr3t"})
    return Daemon(proc)


async def test_sigterm_lets_the_open_stream_finish_then_exits_0(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing(time_scale=1.0, gen_tps=30.0))
    node.reply_tokens = 60
    file = tmp_path / "desired_state.toml"
    file.write_text('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\n[reconcile]\nstatus_listen = "127.0.0.1:0"\n'
                    f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n[models."llama3.2:1b"]\n')
    daemon = await start_daemon(file)
    try:
        url = re.search(r"http://\S+", (await daemon.wait_log("balancer listening on"))["message"]).group(0)  # type: ignore[union-attr]
        await daemon.wait_log(r"pass \(start\) ok")
        lines = []
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("POST", url + "/api/generate", json={"model": "llama3.2:1b", "prompt": "x"}) as r:
                async for line in r.aiter_lines():
                    lines.append(json.loads(line))
                    if len(lines) == 2:
                        daemon.proc.send_signal(signal.SIGTERM)
        assert lines[-1]["done"] is True and len(lines) == 61
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0
        await daemon.wait_log("^stopped$")
        assert all("s3cr3t" not in json.dumps(e) for e in daemon.lines)
        assert all({"time", "level", "message"} <= e.keys() for e in daemon.lines)
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def test_sighup_rereads_the_file(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    head = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\n[reconcile]\nstatus_listen = "127.0.0.1:0"\n'
            f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n')
    file.write_text(head)
    daemon = await start_daemon(file)
    try:
        await daemon.wait_log(r"pass \(start\) ok")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_log(r"pass \(SIGHUP\) ok")
        daemon.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


def test_daemon_refuses_a_broken_file_at_start(tmp_path: Path) -> None:
    import subprocess

    file = tmp_path / "desired_state.toml"
    file.write_text("version = 1\n[[nodes]]\nname = 'a'\nurl = 'gopher://x'\n")
    done = subprocess.run([sys.executable, "-m", "reconciler", "daemon", str(file)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "nodes[0].url: expected an http:// or https:// URL with a host" in done.stderr


def test_a_port_in_use_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    import socket
    import subprocess

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for section, key in (("balancer", "listen"), ("reconcile", "status_listen")):
            file = tmp_path / f"{section}.toml"
            other = "reconcile" if section == "balancer" else "balancer"
            other_key = "status_listen" if other == "reconcile" else "listen"
            file.write_text(f'version = 1\n[{section}]\n{key} = "127.0.0.1:{port}"\n'
                            f'[{other}]\n{other_key} = "127.0.0.1:0"\n')
            done = subprocess.run([sys.executable, "-m", "reconciler", "daemon", str(file)],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 1
            assert f"{section}.{key}: cannot listen on 127.0.0.1:{port}" in done.stderr
            assert "Traceback" not in done.stderr
    finally:
        taken.close()
