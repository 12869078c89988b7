"""Every [balancer] key edited under a running daemon changes behaviour within seconds, without
a restart; `listen` and `status_listen`, which cannot move live, say "needs a restart"."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from reconciler.cli import make_plan
from reconciler.config import load
from reconciler.daemon.run import Service
from simulator import Fault, Simulator, SimNode, Timing

MODEL = "llama3.2:1b"


def write(file: Path, nodes: list[tuple[str, str]], status_listen: str = "127.0.0.1:0", **balancer: str) -> None:
    """An atomic save (as editors do) of a file with no models: passes change nothing."""
    keys = {"listen": '"127.0.0.1:0"', "poll_interval": '"0.2s"', **balancer}
    text = "version = 1\n[balancer]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    text += f'[reconcile]\ninterval = "60s"\nstatus_listen = "{status_listen}"\n'
    text += "".join(f'[[nodes]]\nname = "{n}"\nurl = "{u}"\n' for n, u in nodes)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(file)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def started(file: Path, first_pass: bool = True) -> Service:
    svc = Service(file, drain_timeout=1)
    assert await svc.start()
    if first_pass:
        async def passed() -> bool:
            return svc.daemon.counters.passes >= 1
        await wait_until(passed, 15)
    return svc


def chat(model: str = MODEL) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_refuse_management_applies_live(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    write(file, [("gpu-1", node.url)], refuse_management="false")
    svc = await started(file)
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url if svc.balancer else "") as client:
            first = await client.post("/api/pull", json={"model": "qwq:32b", "stream": False})
            assert first.status_code != 403
            write(file, [("gpu-1", node.url)], refuse_management="true")

            async def refused() -> bool:
                r = await client.request("DELETE", "/api/delete", json={"model": "absent:1b"})
                return r.status_code == 403
            await wait_until(refused, 5)
            r = await client.request("DELETE", "/api/delete", json={"model": MODEL})
            assert r.status_code == 403 and MODEL in node.installed_models()
    finally:
        await svc.stop()


async def test_queue_timeout_applies_live(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.fast())
    node.set_fault(Fault.SLOW_TOKENS, delay=0.1)   # one chat holds the only slot for a while
    file = tmp_path / "desired_state.toml"
    write(file, [("gpu-1", node.url)], queue_timeout='"0s"')
    svc = await started(file)
    assert svc.balancer is not None
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
            async def busy_then_second() -> int:
                async with client.stream("POST", "/api/chat", json=chat()) as held:
                    await held.aiter_bytes().__anext__()      # the slot is taken
                    second = asyncio.create_task(client.post("/api/chat", json=chat()))
                    await asyncio.sleep(0.5)
                    if second.done():
                        return second.result().status_code
                async with asyncio.timeout(20):
                    return (await second).status_code          # waited for the slot

            assert await busy_then_second() == 503
            write(file, [("gpu-1", node.url)], queue_timeout='"30s"')
            await wait_until(lambda: _settled(svc, queue_timeout=30.0), 5)
            assert await busy_then_second() == 200
    finally:
        await svc.stop()


async def _settled(svc: Service, **want: float) -> bool:
    assert svc.balancer is not None
    return all(getattr(svc.balancer.settings, k) == v for k, v in want.items())


async def test_silence_timeout_applies_live(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    # without a queue: in queueing mode an expected load is added to the silence allowed
    write(file, [("gpu-1", node.url)], silence_timeout='"60s"', queue_timeout='"0s"')
    svc = await started(file)
    assert svc.balancer is not None
    node.set_fault(Fault.HANG_AFTER_HEADERS)
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    await client.post("/api/chat", json=chat())
            write(file, [("gpu-1", node.url)], silence_timeout='"0.5s"', queue_timeout='"0s"')
            await wait_until(lambda: _settled(svc, silence_timeout=0.5), 5)
            t0 = time.monotonic()
            async with asyncio.timeout(5):
                answer = await client.post("/api/chat", json=chat())
            assert answer.status_code >= 500 or b"no byte for 0.5 s" in answer.content
            assert time.monotonic() - t0 < 3
    finally:
        await svc.stop()


def blackhole() -> tuple[socket.socket, list[socket.socket], str]:
    """A port whose accept queue is full: a new connection's handshake is never answered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    return server, fillers, f"http://127.0.0.1:{server.getsockname()[1]}"


async def test_connect_timeout_applies_live(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.instant())
    server, fillers, dead = blackhole()
    file = tmp_path / "desired_state.toml"
    write(file, [("gpu-1", node.url), ("gpu-2", dead)], connect_timeout='"3s"')
    svc = await started(file, first_pass=False)
    assert svc.balancer is not None
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
            async def listing_time() -> float:
                t0 = time.monotonic()
                assert (await client.get("/api/tags")).status_code == 200
                return time.monotonic() - t0
            assert await listing_time() >= 2.5        # waits connect_timeout for the dead node
            write(file, [("gpu-1", node.url), ("gpu-2", dead)], connect_timeout='"0.2s"')

            async def quick() -> bool:
                return await listing_time() < 1.0
            await wait_until(quick, 10)
    finally:
        await svc.stop()
        server.close()
        for c in fillers:
            c.close()


async def test_poll_interval_applies_live(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    write(file, [("gpu-1", node.url)], poll_interval='"60s"')
    svc = await started(file)
    assert svc.balancer is not None
    node.install(MODEL)      # appears on the node behind the balancer's back
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
            await asyncio.sleep(0.5)
            assert (await client.post("/api/chat", json=chat())).status_code == 404
            write(file, [("gpu-1", node.url)], poll_interval='"0.2s"')

            async def served() -> bool:
                return (await client.post("/api/chat", json=chat())).status_code == 200
            await wait_until(served, 5)
    finally:
        await svc.stop()


async def test_listen_changes_say_they_need_a_restart(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        status_listen = f"127.0.0.1:{free.getsockname()[1]}"
    write(file, [("gpu-1", node.url)], status_listen)
    svc = await started(file)
    assert svc.balancer is not None
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            write(file, [("gpu-1", node.url)], status_listen, listen='"127.0.0.1:1"')

            async def told() -> bool:
                data = (await client.get(svc.status_url + "/status")).json()
                return any("balancer.listen" in x and "needs a restart" in x for x in data["needs_restart"])
            await wait_until(told, 5)
            # still serving where it listened
            assert (await client.get(svc.balancer.url + "/api/tags")).status_code == 200
        # and `plan` says so too, as a note
        plan = await make_plan(load(file), factory=lambda s: [])
        assert [n.target for n in plan.notes if "needs a restart" in n.message] == ["daemon"]
    finally:
        await svc.stop()


async def test_connection_limits_and_body_limit_apply_live(sim: Simulator, tmp_path: Path) -> None:
    """max_body_mb, max_connections and idle_timeout (issue 12's guards) also move without a restart."""
    node = await sim.add_node("gpu-1", models=[MODEL], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    write(file, [("gpu-1", node.url)])
    svc = await started(file)
    assert svc.balancer is not None
    try:
        async with httpx.AsyncClient(base_url=svc.balancer.url) as client:
            big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 * 2**20)}], "stream": False}
            assert (await client.post("/api/chat", json=big)).status_code == 200
            write(file, [("gpu-1", node.url)], max_body_mb="1", max_connections="3", idle_timeout='"0.5s"')

            async def too_large() -> bool:
                return (await client.post("/api/chat", json=big)).status_code == 413
            await wait_until(too_large, 5)
        server = svc.balancer._runner.server if svc.balancer._runner else None
        assert getattr(server, "max_connections", None) == 3
        # a connection opened now that sends nothing is closed after the new idle timeout
        host, port = svc.balancer.host, svc.balancer.port
        reader, writer = await asyncio.open_connection(host, port)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - t0 < 3
        writer.close()
    finally:
        await svc.stop()
