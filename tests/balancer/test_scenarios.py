"""The scenarios ollama_load_balancer's own harness checks, against simulated nodes."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from simulator import Fault, Timing

from .conftest import CHAT, chat_lines, state, until

pytestmark = pytest.mark.timeout(30)


async def test_basic_stream_through_one_node(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and broke is None
    assert lines[-1]["done"] is True and len(lines) > 2
    assert all(not line["done"] for line in lines[:-1])
    assert state(b, "gpu-1").reliability == "Reliable" and state(b, "gpu-1").in_flight == 0


async def test_chunks_arrive_one_by_one(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.SLOW_TOKENS, delay=0.05)
    b = await make_balancer([node])
    arrivals = []
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        async for raw in r.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) > 5
    # the first line reached the client long before the stream ended: nothing was buffered
    assert arrivals[-1] - arrivals[0] > 0.2


async def test_unreachable_node_is_skipped_and_marked(sim, make_balancer, http) -> None:
    dead = await sim.add_node(name="dead", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([dead, ok])
    dead.set_fault(Fault.REFUSE)
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True  # retried before the first byte
    assert state(b, "dead").reliability == "Unreliable"
    assert state(b, "ok").reliability == "Reliable"
    # the next request avoids the unreliable node
    ok.requests.clear()
    assert (await chat_lines(http, b))[0] == 200
    assert any(r.path == "/api/chat" for r in ok.requests)


async def test_nonsense_address_does_not_crash(make_balancer, http) -> None:
    from balancer import NodeSpec

    b = await make_balancer([NodeSpec("bad", "http://127.0.0.1:1"),
                             NodeSpec("worse", "http://127.0.0.1:99999"),
                             NodeSpec("worst", "nonsense")])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        # the first poll found none of them: no user waits on them, and the answer says why
        assert r.status == 503
        text = (await r.json())["error"]
    assert "bad is unreachable" in text and "worst is unreachable" in text
    assert "not a valid address" in text
    assert all(s.unfit and "unreachable" in s.unfit for s in b.states())


async def test_switched_off_node_is_a_connect_failure_not_silence(sim, make_balancer, http,
                                                                   switched_off) -> None:
    from balancer import NodeSpec

    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    m = ["codestral:22b"]
    b = await make_balancer([NodeSpec("off", switched_off, models=m),
                             NodeSpec("ok", ok.url, models=m)])
    t0 = time.monotonic()
    status, lines, _ = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True
    assert time.monotonic() - t0 < 0.5  # the first poll found it off: not tried at all
    off = state(b, "off")
    assert off.unfit and off.unfit.endswith(": no connection within 0.5 s)")
    # alone, the 503 body names the missing connection, not a silent stream
    alone = await make_balancer([NodeSpec("off", switched_off, models=m)])
    async with http.post(alone.url + "/api/chat", json=CHAT) as r:
        assert r.status == 503
        text = (await r.json())["error"]
    assert "no connection within 0.5 s" in text and "no byte" not in text


def test_connect_timeout_maps_to_connect_failed() -> None:
    from balancer import errors
    from balancer.proxy import upstream_error

    err = upstream_error("gpu-1", aiohttp.ConnectionTimeoutError("Connection timeout"), 120.0,
                         "before first byte", 1.0)
    assert isinstance(err, errors.ConnectFailed)
    assert str(err) == "node gpu-1: before first byte: no connection within 1 s"
    read = upstream_error("gpu-1", aiohttp.SocketTimeoutError("Timeout on reading"), 120.0,
                          "mid-stream", 1.0)
    assert isinstance(read, errors.Silence) and "no byte for 120 s" in str(read)


async def test_hung_node_answers_within_timeout_then_is_avoided(sim, make_balancer, http) -> None:
    hung = await sim.add_node(name="hung", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([hung, ok])
    hung.set_fault(Fault.NO_ANSWER)
    t0 = time.monotonic()
    status, lines, _ = await chat_lines(http, b)
    assert status == 200 and lines[-1]["done"] is True
    assert time.monotonic() - t0 < 3.0  # silence 1 s, then the next node
    assert state(b, "hung").reliability == "Unreliable"


async def test_mid_stream_failure_then_next_request_elsewhere(sim, make_balancer, http) -> None:
    bad = await sim.add_node(name="bad", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([bad, ok])
    bad.set_fault(Fault.FAIL_MID_STREAM, after_chunks=2)
    status, lines, broke = await chat_lines(http, b)
    assert status == 200
    assert not any(line.get("done") for line in lines)
    assert "error" in lines[-1] or broke  # the client sees the failure
    assert state(b, "bad").reliability == "Unreliable"
    status, lines, broke = await chat_lines(http, b)
    assert broke is None and lines[-1]["done"] is True
    assert state(b, "ok").reliability == "Reliable"


@pytest.mark.parametrize("fault", [Fault.RST_MID_STREAM, Fault.FIN_MID_STREAM])
async def test_cut_connection_mid_stream(sim, make_balancer, http, fault) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    node.set_fault(fault, after_chunks=2)
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and not any(line.get("done") for line in lines)
    assert broke or "error" in lines[-1]
    assert state(b, "gpu-1").reliability == "Unreliable"
    assert state(b, "gpu-1").in_flight == 0


async def test_frozen_node_ends_by_silence_timeout(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.SLOW_TOKENS, delay=0.05)
    b = await make_balancer([node])
    t0 = time.monotonic()
    lines = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(b.url + "/api/chat", json=CHAT) as r:
            async for raw in r.content:
                lines.append(json.loads(raw))
                if len(lines) == 2:
                    node.set_fault(Fault.FREEZE)
    node.clear_fault()
    assert time.monotonic() - t0 < 4.0
    assert not any(line.get("done") for line in lines if "done" in line)
    assert state(b, "gpu-1").reliability == "Unreliable"
    assert "no byte for 1 s" in (state(b, "gpu-1").last_error or "")


async def test_recovery_of_an_unreliable_node(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    node.set_fault(Fault.FAIL_MID_STREAM)
    await chat_lines(http, b)
    assert state(b, "gpu-1").reliability == "Unreliable"
    node.clear_fault()  # somebody turned the PC back on
    status, lines, broke = await chat_lines(http, b)
    assert broke is None and lines[-1]["done"] is True
    assert state(b, "gpu-1").reliability == "Reliable"


async def test_all_busy_is_immediate_503(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    for n in (a, c):
        n.set_fault(Fault.SLOW_TOKENS, delay=0.5)
    b = await make_balancer([a, c])
    held = [await http.post(b.url + "/api/chat", json=CHAT) for _ in range(2)]
    try:
        assert {s.in_flight for s in b.states()} == {1}
        t0 = time.monotonic()
        async with http.post(b.url + "/api/chat", json=CHAT) as r:
            assert r.status == 503
            assert "no available servers" in (await r.json())["error"]
        assert time.monotonic() - t0 < 1.0  # not after the held streams
    finally:
        for r in held:
            r.close()
    await until(lambda: all(s.in_flight == 0 for s in b.states()))
    assert {s.reliability for s in b.states()} == {"Reliable"}  # a client leaving is no failure


async def test_bounded_queue_waits_for_a_free_node(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"], timing=Timing.instant())
    node.set_fault(Fault.SLOW_TOKENS, delay=0.02)
    b = await make_balancer([node], queue_timeout=5.0)
    jobs = [asyncio.create_task(chat_lines(http, b)) for _ in range(3)]
    await until(lambda: b.metrics.queued == 2)
    results = await asyncio.gather(*jobs)
    assert [r[0] for r in results] == [200, 200, 200] and b.metrics.queued == 0
    assert all(r[1][-1]["done"] for r in results)


async def test_second_chance_goes_round(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    a.set_fault(Fault.FAIL_MID_STREAM)
    c.set_fault(Fault.FAIL_MID_STREAM)
    await chat_lines(http, b)  # a fails
    await chat_lines(http, b)  # c (still Reliable) fails
    assert [s.reliability for s in b.states()] == ["Unreliable", "Unreliable"]
    c.clear_fault()
    await chat_lines(http, b)  # a gets its second chance and fails again
    assert [s.reliability for s in b.states()] == ["SecondChanceGiven", "Unreliable"]
    status, lines, broke = await chat_lines(http, b)  # now it is c's turn, not a's again
    assert broke is None and lines[-1]["done"] is True
    assert [s.reliability for s in b.states()] == ["SecondChanceGiven", "Reliable"]


async def test_no_nodes_is_503_json(make_balancer, http) -> None:
    b = await make_balancer([])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 503 and "error" in await r.json()
    async with http.get(b.url + "/api/version") as r:
        assert r.status == 503


async def test_get_passthrough(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    async with http.get(b.url + "/") as r:
        assert r.status == 200 and await r.text() == "Ollama is running"
    async with http.get(b.url + "/api/version") as r:
        assert r.status == 200 and "version" in await r.json()
    async with http.head(b.url + "/api/version") as r:
        assert r.status == 200 and r.headers["Content-Length"] == "20"  # {"version":"0.13.5"}
    async with http.get(b.url + "/api/nonexistent") as r:
        assert r.status == 404 and await r.text() == "404 page not found"


async def test_stream_false_is_passed_whole(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    b = await make_balancer([node])
    async with http.post(b.url + "/api/chat", json={**CHAT, "stream": False}) as r:
        body = await r.json()
        assert r.status == 200 and body["done"] is True and body["message"]["content"]
    assert state(b, "gpu-1").reliability == "Reliable"


@pytest.mark.parametrize("path,body,key", [
    ("/api/embed", {"model": "all-minilm:22m", "input": "hello"}, "embeddings"),
    ("/api/embed", {"model": "all-minilm:22m", "input": ["a", "b"]}, "embeddings"),
    ("/api/embeddings", {"model": "all-minilm:22m", "prompt": "hello"}, "embedding"),
    ("/v1/embeddings", {"model": "all-minilm:22m", "input": ["a", "b"]}, "data"),
])
async def test_embeddings(sim, make_balancer, http, path, body, key) -> None:
    node = await sim.add_node(name="gpu-1", models=["all-minilm:22m"])
    b = await make_balancer([node])
    async with http.post(b.url + path, json=body) as r:
        assert r.status == 200
        data = await r.json()
    assert data[key]
    if isinstance(body.get("input"), list):
        assert len(data[key]) == 2


async def test_same_conversation_on_the_only_healthy_node(sim, make_balancer, http) -> None:
    bad = await sim.add_node(name="bad", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    b = await make_balancer([bad, ok])
    bad.set_fault(Fault.REFUSE)
    for _ in range(3):
        status, lines, broke = await chat_lines(http, b)
        assert status == 200 and broke is None
    assert len([r for r in ok.requests if r.path == "/api/chat"]) == 3


@pytest.mark.parametrize("path,body,end", [
    ("/v1/chat/completions", {**CHAT, "stream": True}, b"data: [DONE]"),
    ("/v1/completions", {"model": "codestral:22b", "prompt": "def f(", "stream": True},
     b"data: [DONE]"),
    ("/v1/responses", {"model": "codestral:22b", "input": "hi", "stream": True},
     b"event: response.completed"),
    ("/v1/messages", {"model": "codestral:22b", "max_tokens": 20, "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]}, b"event: message_stop"),
    ("/api/generate", {"model": "codestral:22b", "prompt": "hi"}, b'"done":true'),
])
async def test_every_stream_kind_completes_and_breaks_visibly(sim, make_balancer, http, path,
                                                              body, end) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"], version="0.14.0")
    b = await make_balancer([node])
    async with http.post(b.url + path, json=body) as r:
        data = await r.read()
    assert end in data and state(b, "gpu-1").reliability == "Reliable"
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=2)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(b.url + path, json=body) as r:
            await r.read()
    assert state(b, "gpu-1").reliability == "Unreliable"
