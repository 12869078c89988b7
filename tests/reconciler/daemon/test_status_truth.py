"""`ollafleet status` tells the truth: a running pass is shown, a first pass in progress is not
unhealthy, a closed pipe is not an error, a non-daemon URL is one clear line within a deadline,
and a node's error disappears once it recovered."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.reconciler.daemon.test_service import network, wait_until

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def cli(*args: str, stdout: int = asyncio.subprocess.PIPE) -> tuple[int, str, str]:
    """`ollafleet ARGS` in a subprocess, awaited without blocking the in-process daemon."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "reconciler", *args, cwd=ROOT,
                                                stdout=stdout, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(), err.decode()


async def status(svc: Service) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient() as client:
        return (await client.get(svc.status_url + "/status")).json()


async def test_running_first_pass_is_shown_with_its_pull_and_is_not_unhealthy(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", timing=Timing(pull_bps=0.15e9, pull_tick=0.05))   # a pull of ~10 s
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        async def pulling() -> bool:
            act = (await status(svc)).get("activity") or {}
            return bool(act.get("tasks"))
        await wait_until(pulling)
        code, out, err = await cli("status", "--url", svc.status_url)
        assert "Pass running" in out and "pull" in out and "llama3.2:1b" in out, out
        assert "to do: ollama/gpu-1" in out
        assert code == 0, (out, err)     # nothing is wrong: the first pass simply has not ended
    finally:
        await svc.stop()


async def test_a_closed_pipe_is_not_an_error(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        async def passed() -> bool:
            return ((await status(svc)).get("last_pass") or {}).get("ok") is True
        await wait_until(passed)
        read, write = os.pipe()
        os.close(read)          # like `| head -1` that has already gone
        try:
            code, _, err = await cli("status", "--url", svc.status_url, stdout=write)
        finally:
            os.close(write)
        assert (code, err) == (0, "")
    finally:
        await svc.stop()


@pytest.fixture
async def fake_servers() -> AsyncIterator[dict[str, str]]:
    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>Open WebUI</html>", content_type="text/html")

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(120):
            await resp.write(b" ")
            await asyncio.sleep(0.5)
        return resp

    urls: dict[str, str] = {}
    runners = []
    for name, handler in (("html", html), ("trickle", trickle)):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        urls[name] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        runners.append(runner)
    yield urls
    for runner in runners:
        await runner.cleanup()


async def test_status_at_something_else_is_one_clear_line_within_the_deadline(fake_servers: dict[str, str]) -> None:
    for name, url in fake_servers.items():
        started = time.monotonic()
        code, out, err = await cli("status", "--url", url)
        took = time.monotonic() - started
        assert code == 1 and out == "", name
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"cannot read {url}/status" in err
        assert took < 15, f"{name} took {took:.1f} s"
    assert "not an ollafleet daemon" in (await cli("status", "--url", fake_servers["html"]))[2]
    assert "within 5 s" in (await cli("status", "--url", fake_servers["trickle"]))[2]


async def test_a_recovered_nodes_old_error_is_no_longer_shown(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        async def gpu1() -> dict:  # type: ignore[type-arg]
            return (await status(svc))["balancer"]["nodes"][0]  # type: ignore[no-any-return]
        node.set_fault("refuse")

        async def down() -> bool:
            n = await gpu1()
            return n["reachable"] is False and bool(n["last_error"])
        await wait_until(down)
        node.clear_fault()

        async def up() -> bool:
            return (await gpu1())["reachable"] is True
        await wait_until(up)
        assert (await gpu1())["last_error"] is None

        async def retried() -> bool:   # the retry pass (retry_interval 1s) reaches it again
            return not (await status(svc))["errors"]
        await wait_until(retried)
        code, out, _ = await cli("status", "--url", svc.status_url)
        assert code == 0
        assert "unreachable" not in out
    finally:
        await svc.stop()
