"""Issue 24: ollama_load_balancer's own scenarios, replayed as its harness runs them, each 20
times in a row (a drop-in must pass them every time, not most of the time)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from balancer import Balancer, NodeSpec
from balancer.cli import build_parser, settings_from
from simulator import Fault

from .conftest import CHAT
from .test_hardening import fake, json_chat, nginx  # noqa: F401  (fake is a fixture)

RUNS = 20
pytestmark = pytest.mark.timeout(240)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def served(http: aiohttp.ClientSession, url: str, stream: bool) -> tuple[int, bool]:
    """POST /api/chat; (status, whether the answer ended with done: true)."""
    async with http.post(url + "/api/chat", json={**CHAT, "stream": stream}) as r:
        body = await r.read()
    lines = [json.loads(x) for x in body.splitlines() if x.strip()] if r.status == 200 else []
    return r.status, bool(lines) and lines[-1].get("done") is True


@pytest.mark.parametrize("queue", [[], ["--queue-timeout=600"]], ids=["peer-rule", "queueing"])
async def test_every_node_refused_at_start_then_all_back(sim, queue: list[str]) -> None:
    """The peer's second-chance scenario: the balancer starts while every node refuses
    connections, one chat fails, every node is fixed, five chats follow one after another:
    at least 4 of them are served (the peer's own bar). Also with a queue, as the daemon runs."""
    nodes = [await sim.add_node(name=f"Server{i}", models=["codestral:22b"]) for i in (1, 2, 3)]

    def refuse(on: bool) -> None:
        for n in nodes:
            n.set_fault(Fault.REFUSE) if on else n.clear_fault()

    await replay([n.url for n in nodes], queue, refuse)


async def test_every_node_refusing_the_peer_simulators_way_then_all_back(fake) -> None:
    """The same, with nodes that refuse as the peer's own simulator does: each request is
    answered 503 "Connection refused" as plain text, with no Content-Type, and the connection
    closed. Such a node is not Ollama's while it does so; once fixed it is asked again."""
    refusing = [True]

    async def answer(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        if refusing[0]:
            resp = web.Response(status=503, body=b"Connection refused")
            resp.force_close()
            return resp
        return await json_chat(request, body)

    nodes = [await fake(answer) for _ in range(3)]

    def refuse(on: bool) -> None:
        refusing[0] = on

    await replay([n.url for n in nodes], [], refuse)


async def replay(urls: list[str], extra: list[str], refuse: Callable[[bool], None]) -> None:
    args = build_parser().parse_args(
        ["--timeout=5", *extra, *(f"--server={u}=Server{i}" for i, u in enumerate(urls))])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        for run in range(RUNS):
            refuse(True)
            b = Balancer(settings_from(args), args.server)
            await b.start("127.0.0.1", 0)
            try:
                status, ok = await served(http, b.url, stream=False)
                assert status in (502, 503) and not ok, run
                refuse(False)
                results = [await served(http, b.url, stream=False) for _ in range(5)]
                assert sum(ok for _, ok in results) >= 4, (run, results)
            finally:
                await b.stop(drain_timeout=1.0)


async def test_hardening_rules_hold_with_the_recheck(sim, make_balancer, http, switched_off,
                                                     fake) -> None:
    """What the re-check must not undo: a switched-off node costs a user nothing while
    another node can serve, and no more than the connect timeout when none can; a node that
    answers HTML stays out even when it is the only one."""
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([ok, NodeSpec("off", switched_off)], connect_timeout=2.0)
    t0 = time.monotonic()
    assert await served(http, b.url, stream=True) == (200, True)
    assert time.monotonic() - t0 < 1.5  # never waited for the switched-off node
    ok.set_fault(Fault.REFUSE)
    await b.refresh()
    assert all(s.unfit for s in b.states())
    t0 = time.monotonic()
    status, _ = await served(http, b.url, stream=True)
    assert status == 503 and time.monotonic() - t0 < 3.5  # one re-check, bounded by 2 s
    page = await fake(nginx)
    alone = await make_balancer([NodeSpec("page", page.url)])
    assert (await served(http, alone.url, stream=True))[0] == 503
    assert not [q for q in page.seen if q.path == "/api/chat"]


async def port_free(port: int) -> None:
    """The harness's check before it starts a balancer: the port can be bound."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                pass
        await asyncio.sleep(0.01)


async def test_chat_at_once_after_a_killed_balancer_is_replaced(sim) -> None:
    """The peer harness's restart: SIGKILL the previous balancer without waiting for it,
    start the next one with a single node on the same port, wait until the port accepts a TCP
    connection, send a streaming chat at once: never "connection refused".

    Like the harness's own start routine, the next balancer is started once the port can be
    bound: a killed process's listening socket still completes handshakes for a few ms (3-30
    ms measured here, for any process, a bare Python one too), and a probe answered by the
    dying process says nothing about its successor."""
    node = await sim.add_node(name="FreezeServer", models=["codestral:22b"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            for run in range(RUNS + 1):  # the first start has no predecessor
                if procs:
                    procs[-1].send_signal(signal.SIGKILL)  # not waited for
                    await port_free(port)
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "balancer", "--timeout=2",
                    f"--server={node.url}=FreezeServer", f"--bind=127.0.0.1:{port}",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    env=env))
                deadline = time.monotonic() + 15
                while True:
                    try:
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline, f"run {run}: port never opened"
                        await asyncio.sleep(0.05)
                try:
                    result = await served(http, url, stream=True)
                except aiohttp.ClientConnectorError as exc:
                    pytest.fail(f"run {run}: {exc}")
                assert result == (200, True), run
                for old in procs[:-1]:
                    if old.returncode is None:
                        await old.wait()  # reaped only once its successor has served
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
