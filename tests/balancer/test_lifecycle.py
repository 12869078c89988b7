"""Client disconnects, live node-list changes, graceful shutdown."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from balancer import Balancer, NodeSpec, Settings
from simulator import Fault

from .conftest import CHAT, FAST, chat_lines, state, until

pytestmark = pytest.mark.timeout(30)


async def test_client_disconnect_stops_the_generation(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.SLOW_TOKENS, delay=0.3)
    b = await make_balancer([node])
    r = await http.post(b.url + "/api/chat", json=CHAT)
    first = await r.content.readline()
    assert json.loads(first)["done"] is False
    r.close()  # the user pressed stop
    await node.wait_for(lambda: node.cancelled_generations >= 1, timeout=2.0)
    chat = [q for q in node.requests if q.path == "/api/chat"]
    await node.wait_for(lambda: chat[-1].client_disconnected, timeout=2.0)
    await until(lambda: state(b, "gpu-1").in_flight == 0, 2.0)
    assert state(b, "gpu-1").reliability == "Reliable"  # not the node's fault
    assert b.metrics.client_cancelled_total == 1


async def test_client_disconnect_while_waiting_for_first_token(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.HANG_AFTER_HEADERS)
    b = await make_balancer([node], silence_timeout=10.0)
    task = asyncio.create_task(http.post(b.url + "/api/chat", json=CHAT))
    await node.wait_for(lambda: any(q.path == "/api/chat" for q in node.requests))
    task.cancel()
    chat = [q for q in node.requests if q.path == "/api/chat"]
    await node.wait_for(lambda: chat[-1].client_disconnected, timeout=2.0)
    await until(lambda: state(b, "gpu-1").in_flight == 0, 2.0)
    assert state(b, "gpu-1").reliability == "Reliable"


async def test_unforeseen_error_counts_against_the_node(sim, make_balancer, http,
                                                       monkeypatch) -> None:
    """An error nobody planned for (aiohttp's strict parser leaves no real node answer that
    triggers one, so it is injected) is a failure, not a client that went away."""
    import balancer.proxy

    class Broken(balancer.proxy.EndChecker):
        def feed(self, chunk: bytes) -> None:
            raise ValueError("unforeseen")

    monkeypatch.setattr(balancer.proxy, "EndChecker", Broken)
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 500
    s = state(b, "gpu-1")
    assert s.reliability == "Unreliable" and s.in_flight == 0
    assert s.last_error == "node gpu-1: unexpected ValueError: unforeseen"
    assert b.metrics.client_cancelled_total == 0 and b.metrics.failures_total == 1


async def test_node_list_changes_during_a_stream(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    a.set_fault(Fault.SLOW_TOKENS, delay=0.05)
    b = await make_balancer([a])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        first = await r.content.readline()
        b.replace_nodes([NodeSpec("c", c.url)])  # a removed while it streams
        assert [s.name for s in b.states()] == ["c"]
        status, lines, broke = await chat_lines(http, b)  # new requests go to c
        assert status == 200 and broke is None
        rest = [json.loads(x) async for x in r.content if x.strip()]
    assert json.loads(first)["done"] is False and rest[-1]["done"] is True
    assert b.metrics.in_flight == 0
    # changing a node's settings keeps its state
    b.replace_nodes([NodeSpec("c", c.url, max_concurrent=2), NodeSpec("a", a.url)])
    assert [(s.name, s.max_concurrent) for s in b.states()] == [("c", 2), ("a", 1)]
    await until(lambda: state(b, "c").models == ("codestral:22b",))  # polled when it was added
    await b.refresh()
    assert state(b, "a").models == ("codestral:22b",)


async def test_graceful_shutdown_finishes_open_streams(sim, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.SLOW_TOKENS, delay=0.05)
    b = Balancer(FAST, [NodeSpec("gpu-1", node.url)])
    await b.start()
    r = await http.post(b.url + "/api/chat", json=CHAT)
    await r.content.readline()
    stopping = asyncio.create_task(b.stop(drain_timeout=5.0))
    lines = [json.loads(x) async for x in r.content if x.strip()]
    await stopping
    assert lines[-1]["done"] is True
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(b.url + "/api/version")


async def test_shutdown_cancels_streams_after_the_drain_timeout(sim, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.SLOW_TOKENS, delay=1.0)
    b = Balancer(Settings(silence_timeout=5.0, poll_interval=0.0), [NodeSpec("gpu-1", node.url)])
    await b.start()
    r = await http.post(b.url + "/api/chat", json=CHAT)
    await r.content.readline()
    await asyncio.wait_for(b.stop(drain_timeout=0.3), 3.0)
    await node.wait_for(lambda: node.cancelled_generations >= 1, timeout=2.0)
    r.close()


async def test_same_port_can_be_reused_at_once(sim) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = Balancer(FAST, [NodeSpec("gpu-1", node.url)])
    await b.start()
    port = b.port
    async with aiohttp.ClientSession() as s:
        async with s.get(b.url + "/api/version") as r:
            assert r.status == 200
    await b.stop()
    again = Balancer(FAST, [NodeSpec("gpu-1", node.url)])
    await again.start("127.0.0.1", port)
    assert again.port == port
    await again.stop()


async def test_background_polls_notice_new_models(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], poll_interval=0.05)
    node.install("qwq:32b")
    await until(lambda: "qwq:32b" in (state(b, "gpu-1").models or ()), 3.0)


async def test_no_leaks_after_many_mixed_requests(sim, make_balancer, http) -> None:
    import os

    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c], silence_timeout=2.0)

    async def cancelled() -> None:
        r = await http.post(b.url + "/api/chat", json=CHAT)
        await r.content.readline()
        r.close()

    async def round_() -> None:
        await asyncio.gather(chat_lines(http, b), cancelled(), return_exceptions=True)

    await round_()  # warm up pools
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    for i in range(15):
        a.set_fault(Fault.RST_MID_STREAM if i % 3 == 0 else Fault.NONE)
        await round_()
    a.clear_fault()
    await until(lambda: b.metrics.in_flight == 0, 3.0)
    await until(lambda: len(asyncio.all_tasks()) <= tasks, 3.0)
    assert len(os.listdir("/proc/self/fd")) <= fds + 4  # pooled keep-alive connections at most
    assert all(s.in_flight == 0 for s in b.states())


async def test_port_in_use_is_a_clear_error(sim) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        b = Balancer(FAST, [])
        with pytest.raises(OSError):
            await b.start("127.0.0.1", taken.getsockname()[1])
        await b.stop()  # nothing left to stop
