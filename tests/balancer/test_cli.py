"""ollama_load_balancer-compatible command line."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import aiohttp
import pytest

from balancer.cli import build_parser, parse_server, settings_from

from .conftest import CHAT


def test_server_flag_forms() -> None:
    args = build_parser().parse_args([
        "--server", "http://192.168.150.134:11434=James' server",
        "--server=http://127.0.0.1:11501=Server11501",
        "--server", "http://10.0.0.1:11434=a=b",
        "--timeout=7",
    ])
    assert [(s.url, s.name) for s in args.server] == [
        ("http://192.168.150.134:11434", "James' server"),
        ("http://127.0.0.1:11501", "Server11501"),
        ("http://10.0.0.1:11434", "a=b"),
    ]
    assert settings_from(args).silence_timeout == 7.0
    assert args.bind == ("0.0.0.0", 11434)  # the peer's: every interface, port 11434


def test_defaults_and_bind() -> None:
    args = build_parser().parse_args(["--server", "http://h:1=n", "--bind", "0.0.0.0:8080"])
    s = settings_from(args)
    assert args.bind == ("0.0.0.0", 8080)
    assert (s.silence_timeout, s.connect_timeout, s.queue_timeout, s.refuse_management) == (
        120.0, 1.0, 0.0, True)
    assert (s.idle_timeout, s.max_connections, s.max_body) == (30.0, 0, 64 * 2**20)
    s = settings_from(build_parser().parse_args([
        "--server", "http://h:1=n", "--idle-timeout", "5", "--max-connections", "100",
        "--max-body-mb", "8"]))
    assert (s.idle_timeout, s.max_connections, s.max_body) == (5.0, 100, 8 * 2**20)


def test_time_scale_for_replays_reaches_the_balancers_clock() -> None:
    from balancer import Balancer
    s = settings_from(build_parser().parse_args(["--server", "http://h:1=n"]))
    assert s.time_scale == 1.0
    s = settings_from(build_parser().parse_args(["--server", "http://h:1=n", "--time-scale", "0.1"]))
    assert s.time_scale == 0.1
    # learned rates are in the nodes' reported seconds: the cost clock runs 10x with them
    assert Balancer(s).fleet.knowledge.now() == pytest.approx(time.monotonic() / 0.1, rel=1e-3)
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--server", "http://h:1=n", "--time-scale", bad])


@pytest.mark.parametrize("bad", ["http://h:1", "=name", "http://h:1="])
def test_bad_server_is_rejected(bad: str) -> None:
    with pytest.raises(Exception):
        parse_server(bad)


def test_server_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([])
    assert exc.value.code == 2


async def test_runs_logs_and_stops_on_sigterm(sim) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--server", f"{node.url}=gpu-1",
        "--timeout", "5", "--bind", f"127.0.0.1:{port}",
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        while b"listening" not in line:
            line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert f"127.0.0.1:{port}".encode() in line and b"gpu-1: Reliable" in line
        assert line[:4].isdigit()  # timestamped
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/api/chat", json=CHAT) as r:
                assert r.status == 200
                await r.read()
        lines = []
        while not lines or b"done on gpu-1: completed" not in lines[-1]:
            lines.append(await asyncio.wait_for(proc.stderr.readline(), 10))
        assert b"/api/chat codestral:22b -> gpu-1" in lines[0] and b"1/1 busy" in lines[0]
        assert b"0/1 busy" in lines[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
