"""Issue 12: half-broken nodes and hostile clients, on simulated nodes and small fake servers
(all on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from balancer import Balancer, NodeSpec, Settings
from simulator import Fault

from .conftest import CHAT, FAST, chat_lines, state, until

pytestmark = pytest.mark.timeout(30)
TAGS = {"models": [{"name": "codestral:22b", "model": "codestral:22b",
                    "modified_at": "2026-01-01T00:00:00Z"}]}
NGINX = b"<html><body><h1>Welcome to nginx!</h1></body></html>"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Fake:
    """A small HTTP server that is not (quite) Ollama; records what reached it, raw."""
    answer: Callable[[web.BaseRequest, bytes], Awaitable[web.StreamResponse]]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Awaitable[Fake]]]:
    runners: list[web.ServerRunner] = []

    async def make(answer: Callable[[web.BaseRequest, bytes], Awaitable[web.StreamResponse]],
                   name: str = "fake") -> Fake:
        f = Fake(answer)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            body = await request.content.read()  # whole, without aiohttp's 1 MiB cap
            f.seen.append(Seen(request.method, request.path, dict(request.headers), body))
            return await f.answer(request, body)

        # auto_decompress=False: see the body exactly as the balancer sent it
        runner = web.ServerRunner(web.Server(handle, auto_decompress=False), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        f.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return f

    yield make
    for r in runners:
        await r.cleanup()


async def nginx(request: web.BaseRequest, body: bytes) -> web.Response:
    return web.Response(body=NGINX, content_type="text/html")


async def tags_then_html(request: web.BaseRequest, body: bytes) -> web.Response:
    """Lists the model like Ollama, but answers the chat with a web page."""
    if request.path in ("/api/tags", "/api/ps"):
        return web.json_response(TAGS if request.path == "/api/tags" else {"models": []})
    return web.Response(body=NGINX, content_type="text/html")


async def json_chat(request: web.BaseRequest, body: bytes) -> web.Response:
    if request.path in ("/api/tags", "/api/ps"):
        return web.json_response(TAGS if request.path == "/api/tags" else {"models": []})
    return web.json_response({"model": "codestral:22b", "done": True,
                              "message": {"role": "assistant", "content": "hi"}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- retry before the first byte ------------------------------------------------------
async def test_500_before_first_byte_is_retried_on_free_nodes(sim, make_balancer, http) -> None:
    nodes = [await sim.add_node(name=f"gpu-{i}", models=["codestral:22b"]) for i in (1, 2, 3)]
    nodes[0].set_fault(Fault.HTTP_500)
    b = await make_balancer(nodes)
    for _ in range(2):
        status, lines, broke = await chat_lines(http, b)
        assert status == 200 and broke is None and lines[-1]["done"] is True
    first = state(b, "gpu-1")
    assert first.reliability == "Unreliable"
    assert first.last_error == "node gpu-1: answered HTTP 500"
    assert b.metrics.retries_total >= 1


async def test_500_on_the_last_node_is_passed_on(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.HTTP_500)
    b = await make_balancer([node])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 500
        assert "llama runner process has terminated" in (await r.json())["error"]


async def test_400_is_the_clients_and_passes_through(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    other = await sim.add_node(name="b", models=["codestral:22b"])
    b = await make_balancer([a, other])
    bad = {**CHAT, "options": {"top_logprobs": 99}, "logprobs": True, "top_logprobs": 99}
    async with http.post(b.url + "/api/chat", json=bad) as r:
        assert r.status == 400
        assert "error" in await r.json()
    assert not [q for q in other.requests if q.path == "/api/chat"]  # not retried elsewhere
    assert state(b, "a").reliability == "Reliable" and b.metrics.failures_total == 0


# -- the polls decide who is a candidate ------------------------------------------------
async def test_node_serving_html_is_no_candidate(sim, make_balancer, http, fake) -> None:
    page = await fake(nginx)
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([NodeSpec("web", page.url), NodeSpec("ok", ok.url)])
    web_state = state(b, "web")
    assert web_state.unfit and "does not answer like Ollama" in web_state.unfit
    assert "text/html" in web_state.unfit
    async with http.post(b.url + "/api/chat", json={**CHAT, "model": "nobody-has-it"}) as r:
        assert r.status == 404
        assert (await r.json())["error"] == "model 'nobody-has-it' not found"
    for _ in range(2):  # and the overflow does not go there either
        status, lines, _ = await chat_lines(http, b)
        assert status == 200 and lines[-1]["done"] is True
    assert not [s for s in page.seen if s.path == "/api/chat"]


async def test_html_answer_to_a_chat_is_a_node_failure(sim, make_balancer, http, fake) -> None:
    liar = await fake(tags_then_html)
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([NodeSpec("liar", liar.url), NodeSpec("ok", ok.url)])
    status, lines, _ = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True  # answered by ok instead
    liar_state = state(b, "liar")
    assert liar_state.reliability == "Unreliable"
    assert "text/html" in (liar_state.last_error or "") and "not Ollama's" in liar_state.last_error
    assert b.metrics.failures_total == 1
    alone = await make_balancer([NodeSpec("liar", liar.url)])
    async with http.post(alone.url + "/api/chat", json=CHAT) as r:
        assert r.status == 502 and r.content_type == "application/json"
        assert "not Ollama's" in (await r.json())["error"]


async def test_node_frozen_at_start_is_skipped_until_a_poll_finds_it(sim, make_balancer,
                                                                     http) -> None:
    frozen = await sim.add_node(name="frozen", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    frozen.set_fault(Fault.FREEZE)
    t0 = time.monotonic()
    b = await make_balancer([frozen, ok])
    assert time.monotonic() - t0 < 3.0  # start waits for the first poll at most ~1.5 s
    assert "no answer to the first poll" in (state(b, "frozen").unfit or "")
    t0 = time.monotonic()
    status, lines, _ = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True
    assert time.monotonic() - t0 < 0.9  # never waited on the frozen node's silence (1 s)
    assert state(b, "frozen").reliability == "Reliable"  # not a user's request's fault
    frozen.clear_fault()
    await until(lambda: state(b, "frozen").unfit is None, timeout=8.0)
    ok.set_fault(Fault.REFUSE)
    frozen.clear_requests()
    status, lines, _ = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True
    assert [q for q in frozen.requests if q.path == "/api/chat"]


async def test_single_frozen_node_is_a_node_failure_not_a_missing_model(sim, make_balancer,
                                                                       http) -> None:
    frozen = await sim.add_node(name="frozen", models=["codestral:22b"])
    frozen.set_fault(Fault.FREEZE)
    b = await make_balancer([frozen])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 503
        text = (await r.json())["error"]
    assert "frozen is unreachable" in text and "not found" not in text


# -- readiness, start-up and shutdown ------------------------------------------------------
async def test_port_opens_at_once_and_holds_requests_until_the_first_polls(fake, http) -> None:
    """A harness that sends a chat the moment the port accepts: the port is open while the
    first polls run, and the chat waits for them instead of being refused or routed blind."""
    polled = asyncio.Event()

    async def slow_polls(request: web.BaseRequest, body: bytes) -> web.Response:
        if request.path in ("/api/tags", "/api/ps"):
            await polled.wait()
        return await json_chat(request, body)

    node = await fake(slow_polls)
    port = free_port()
    b = Balancer(Settings(**{**FAST.__dict__, "connect_timeout": 3.0}), [NodeSpec("gpu-1", node.url)])
    starting = asyncio.create_task(b.start("127.0.0.1", port))
    try:
        await until(lambda: accepts(port), timeout=5.0)
        assert not starting.done()  # still polling, yet the port accepts
        chat = asyncio.create_task(http.post(f"http://127.0.0.1:{port}/api/chat", json=CHAT))
        await asyncio.sleep(0.3)
        assert not chat.done() and not [q for q in node.seen if q.path == "/api/chat"]  # held
        polled.set()
        async with await chat as r:
            assert r.status == 200 and (await r.json())["done"] is True
        await starting
    finally:
        polled.set()
        await b.stop(drain_timeout=1.0)


async def test_requests_are_held_no_longer_than_the_first_polls_bound(sim, http) -> None:
    frozen = await sim.add_node(name="frozen", models=["codestral:22b"])
    frozen.set_fault(Fault.FREEZE)
    port = free_port()
    b = Balancer(FAST, [NodeSpec("frozen", frozen.url)])
    starting = asyncio.create_task(b.start("127.0.0.1", port))
    try:
        await until(lambda: accepts(port), timeout=5.0)
        t0 = time.monotonic()
        async with http.post(f"http://127.0.0.1:{port}/api/chat", json=CHAT) as r:
            assert r.status == 503 and "frozen is unreachable" in (await r.json())["error"]
        # first polls (connect timeout 0.5 s + 1 s), then one re-check (0.5 s)
        assert time.monotonic() - t0 < 3.5
        await starting
    finally:
        await b.stop(drain_timeout=1.0)


async def test_successor_binds_as_soon_as_the_predecessor_lets_go(sim, http) -> None:
    """A harness that stops a balancer and at once starts the next on the same port: the
    new one waits for the port instead of failing, and the old one stops listening first."""
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    port = free_port()
    old = Balancer(FAST, [NodeSpec("gpu-1", node.url)])
    await old.start("127.0.0.1", port)
    new = Balancer(FAST, [NodeSpec("gpu-1", node.url)])
    starting = asyncio.create_task(new.start("127.0.0.1", port))
    try:
        await asyncio.sleep(0.3)
        assert not starting.done()  # the old one still listens: wait, don't fail
        await old.stop(drain_timeout=1.0)
        await asyncio.wait_for(starting, 5.0)
        status, lines, _ = await chat_lines(http, new)
        assert status == 200 and lines[-1]["done"] is True
    finally:
        await old.stop(drain_timeout=1.0)
        await new.stop(drain_timeout=1.0)


# -- client connections ------------------------------------------------------------------
async def test_half_header_flood_neither_blocks_users_nor_lasts(sim, make_balancer, http,
                                                               caplog) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], max_connections=20, idle_timeout=1.5)
    flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    with caplog.at_level(logging.WARNING, logger="balancer"):
        for _ in range(60):  # three times the bound, each with half a header
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            await writer.drain()
            flood.append((reader, writer))
        await until(lambda: b.metrics.connections_refused_total >= 40)
        t0 = time.monotonic()
        status, lines, _ = await chat_lines(http, b)  # a user during the flood
        assert status == 200 and lines[-1]["done"] is True
        assert time.monotonic() - t0 < 1.0
        assert b.metrics.connections_open <= 20
        # the rest of the flood is closed by the idle/header timeout
        await until(lambda: b.metrics.connections_timed_out_total > 0
                    and b.metrics.connections_open <= 1, timeout=5.0)
        closed = 0
        for reader, writer in flood:
            if await asyncio.wait_for(reader.read(), 2.0) == b"":
                closed += 1
            writer.close()
        assert closed == 60
    warnings = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
    assert len(warnings) == 1 and "max_connections" in warnings[0].getMessage()


async def test_connection_limit_refuses_when_every_connection_is_busy(sim, make_balancer,
                                                                      http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"], num_parallel=2)
    node.set_fault(Fault.SLOW_TOKENS, delay=0.2)
    b = await make_balancer([NodeSpec("gpu-1", node.url, max_concurrent=2)], max_connections=1)
    async with http.post(b.url + "/api/chat", json=CHAT) as busy:
        assert busy.status == 200
        await busy.content.readline()
        async with aiohttp.ClientSession() as other:
            with pytest.raises(aiohttp.ClientError):
                async with other.post(b.url + "/api/chat", json=CHAT) as r:
                    await r.read()
        assert b.metrics.connections_refused_total == 1
        async for _ in busy.content:  # the stream in progress was not disturbed
            pass


# -- request bodies ----------------------------------------------------------------------
async def test_gzip_body_is_decoded_and_labelled_so(sim, make_balancer, http, fake) -> None:
    raw = json.dumps({**CHAT, "stream": False}).encode()
    recorder = await fake(json_chat)
    b = await make_balancer([NodeSpec("rec", recorder.url)])
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with http.post(b.url + "/api/chat", data=gzip.compress(raw), headers=headers) as r:
        assert r.status == 200
    sent = next(s for s in recorder.seen if s.path == "/api/chat")
    assert "Content-Encoding" not in sent.headers and sent.body == raw
    # a coding the balancer does not decode goes on as sent, header and body
    odd = {"Content-Encoding": "x-custom", "Content-Type": "application/json"}
    async with http.post(b.url + "/api/chat", data=b"\x00opaque", headers=odd) as r:
        assert r.status == 200
    sent = [s for s in recorder.seen if s.path == "/api/chat"][-1]
    assert sent.headers.get("Content-Encoding") == "x-custom" and sent.body == b"\x00opaque"
    # and a real (simulated) Ollama node is not degraded by it
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b2 = await make_balancer([node])
    for _ in range(2):
        async with http.post(b2.url + "/api/chat", data=gzip.compress(raw), headers=headers) as r:
            assert r.status == 200 and (await r.json())["done"] is True
    assert state(b2, "gpu-1").reliability == "Reliable" and b2.metrics.failures_total == 0


async def _answer_before_body(port: int, head: bytes) -> bytes:
    """Send a request head that announces 100 MB, and no body: the answer must come anyway."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    finally:
        writer.close()


async def test_refusals_do_not_read_the_body(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], max_body=1024 * 1024)
    length = b"Content-Length: 100000000\r\n\r\n"
    pull = await _answer_before_body(b.port, b"POST /api/pull HTTP/1.1\r\nHost: x\r\n" + length)
    assert pull.startswith(b"HTTP/1.1 403")
    chat = await _answer_before_body(b.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + length)
    assert chat.startswith(b"HTTP/1.1 413")
    empty = await make_balancer([])
    chat = await _answer_before_body(empty.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + length)
    assert chat.startswith(b"HTTP/1.1 503")
    node.set_fault(Fault.SLOW_TOKENS, delay=0.2)
    async with aiohttp.ClientSession() as http:
        async with http.post(b.url + "/api/chat", json=CHAT) as busy:  # the only node, busy
            await busy.content.readline()
            chat = await _answer_before_body(
                b.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            assert chat.startswith(b"HTTP/1.1 503")


async def test_body_that_stops_coming_is_not_waited_for(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mo")
    t0 = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    assert head.startswith(b"HTTP/1.1 408") and 0.4 < time.monotonic() - t0 < 2.0
    assert b.metrics.connections_timed_out_total == 1
    writer.close()


async def test_large_body_limit(make_balancer, http, fake) -> None:
    recorder = await fake(json_chat)
    b = await make_balancer([NodeSpec("rec", recorder.url)], max_body=1024 * 1024)
    big = json.dumps({**CHAT, "images": ["A" * (2 * 1024 * 1024)]}).encode()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: found while reading
        for i in range(0, len(big), 256 * 1024):
            yield big[i:i + 256 * 1024]

    async with http.post(b.url + "/api/chat", data=chunked()) as r:
        assert r.status == 413
        assert "max_body" in (await r.json())["error"]
    assert not [s for s in recorder.seen if s.path == "/api/chat"]
    ok = json.dumps({**CHAT, "stream": False, "images": ["A" * 900_000]}).encode()
    async with http.post(b.url + "/api/chat", data=ok) as r:
        assert r.status == 200  # under the limit: served
    assert [s.body for s in recorder.seen if s.path == "/api/chat"] == [ok]
    assert Settings().max_body == 64 * 1024 * 1024


async def test_body_the_route_needs_no_look_into_is_streamed(make_balancer, fake) -> None:
    release = asyncio.Event()

    async def echo(request: web.BaseRequest, body: bytes) -> web.Response:
        if request.path in ("/api/tags", "/api/ps"):
            return web.json_response({"models": []})
        return web.json_response({"received": len(body)})

    node = await fake(echo)
    b = await make_balancer([NodeSpec("n", node.url)])

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * (1024 * 1024)
        await release.wait()  # the client holds back the second megabyte
        yield b"y" * (1024 * 1024)

    async with aiohttp.ClientSession() as client:
        post = asyncio.create_task(client.post(b.url + "/api/experimental/upload", data=body()))
        # sent on to the node while the body is still coming, not held whole first
        await until(lambda: b.metrics.in_flight == 1)
        release.set()
        r = await post
        assert r.status == 200 and (await r.json())["received"] == 2 * 1024 * 1024
        r.release()
