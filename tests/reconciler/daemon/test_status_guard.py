"""Issue 25 item 2: the status port is bounded like the balancer's. A few hundred half-sent
`GET /status` against a daemon limited to 256 open files: the balancer still serves, a pass
still runs, the status page still answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from simulator import Simulator

from .test_process import Daemon, sim  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(90)
FILES = 256  # the daemon's open-files limit, soft and hard: it cannot raise it
FLOOD = 400  # half-sent requests on the status port, more than FILES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


async def test_half_sent_status_requests_starve_nothing(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"])
    status_port = _free_port()
    file = tmp_path / "desired_state.toml"
    file.write_text('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\nidle_timeout = "60s"\n'
                    f'[reconcile]\nstatus_listen = "127.0.0.1:{status_port}"\n'
                    f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n[models."llama3.2:1b"]\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reconciler", "daemon", str(file), "--log-format", "json",
        "--drain-timeout", "2", stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env=dict(os.environ), preexec_fn=_limit)
    daemon = Daemon(proc)
    flood: list[asyncio.StreamWriter] = []
    try:
        url = re.search(r"http://\S+", (await daemon.wait_log("balancer listening on"))["message"]
                        ).group(0)  # type: ignore[union-attr]
        await daemon.wait_log(r"pass \(start\) ok")
        for _ in range(FLOOD):  # each opens, sends half a request line and header, and waits
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", status_port)
            except OSError:
                continue
            writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            flood.append(writer)
        await asyncio.sleep(0)  # the writes are out; the daemon has accepted what it accepts
        async with httpx.AsyncClient(timeout=20) as client:
            for _ in range(3):
                r = await client.post(url + "/api/generate",
                                      json={"model": "llama3.2:1b", "prompt": "x", "stream": False})
                assert r.status_code == 200, r.text
            proc.send_signal(signal.SIGHUP)  # a pass, which opens the file and talks to the node
            await daemon.wait_log(r"pass \(SIGHUP\) (ok|.*0 failed)")
            r = await client.get(f"http://127.0.0.1:{status_port}/status")
            assert r.status_code == 200
            assert r.json()["balancer"]["nodes"][0]["name"] == "gpu-1"
        messages = json.dumps([e["message"] for e in daemon.lines])
        assert "Too many open files" not in messages and "EMFILE" not in messages
        assert "status port: connection limit reached" in messages  # its guard said so
    finally:
        for w in flood:
            w.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
