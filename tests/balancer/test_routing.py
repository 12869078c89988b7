"""Model-aware routing, fleet-wide listings, refused management, retries."""
from __future__ import annotations

import io
import json
import time

import pytest

from balancer import NodeSpec
from simulator import Fault, Timing

from .conftest import CHAT, chat_lines, state, until

pytestmark = pytest.mark.timeout(30)


def chat_for(model: str) -> dict:
    return {**CHAT, "model": model}


async def test_requests_go_to_nodes_that_have_the_model(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    assert state(b, "a").models == ("qwq:32b",)
    status, lines, _ = await chat_lines(http, b, chat_for("codestral:22b"))
    assert status == 200 and lines[-1]["done"]
    status, lines, _ = await chat_lines(http, b, chat_for("QWQ:32B"))
    assert status == 200 and lines[-1]["done"]
    assert [r.body["model"] for r in a.requests if r.path == "/api/chat"] == ["QWQ:32B"]
    assert [r.body["model"] for r in c.requests if r.path == "/api/chat"] == ["codestral:22b"]


async def test_loaded_model_is_preferred(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    async with http.post(c.url + "/api/generate", json={"model": "codestral:22b"}) as r:
        assert r.status == 200  # load it on c only
    b = await make_balancer([a, c])
    assert state(b, "c").loaded == ("codestral:22b",) and state(b, "a").loaded == ()
    await chat_lines(http, b)
    assert not [r for r in a.requests if r.path == "/api/chat"]
    assert [r for r in c.requests if r.path == "/api/chat"]


@pytest.mark.parametrize("path,body,expected", [
    ("/api/chat", chat_for("nope:1b"), {"error": "model 'nope:1b' not found"}),
    ("/api/generate", {"model": "nope", "prompt": "x"}, {"error": "model 'nope' not found"}),
    ("/api/embed", {"model": "nope", "input": "x"},
     {"error": 'model "nope" not found, try pulling it first'}),
    ("/v1/chat/completions", chat_for("nope"),
     {"error": {"message": "model 'nope' not found", "type": "not_found_error",
                "param": None, "code": None}}),
])
async def test_unknown_model_is_ollamas_404_at_once(sim, make_balancer, http, path, body,
                                                    expected) -> None:
    node = await sim.add_node(name="a", models=["codestral:22b"])
    b = await make_balancer([node])
    async with http.post(b.url + path, json=body) as r:
        assert r.status == 404 and await r.json() == expected
    assert not [r for r in node.requests if r.path == path]


async def test_model_on_a_busy_node_only_is_503(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["qwq:32b"])
    a.set_fault(Fault.SLOW_TOKENS, delay=0.5)
    b = await make_balancer([a, c])
    held = await http.post(b.url + "/api/chat", json=CHAT)
    try:
        async with http.post(b.url + "/api/chat", json=CHAT) as r:
            assert r.status == 503
    finally:
        held.close()


async def test_draining_node_is_skipped(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    b.set_draining("a", "codestral:22b", True)
    await chat_lines(http, b)
    assert not [r for r in a.requests if r.path == "/api/chat"]
    b.set_draining("a", "codestral:22b", False)
    await chat_lines(http, b)
    assert [r for r in a.requests if r.path == "/api/chat"]


async def test_overlapping_drains_of_a_model_end_with_the_last(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    b.set_draining("a", "codestral:22b", True)
    b.set_draining("a", "Codestral:22B", True)  # a second change on the same model
    b.set_draining("a", "codestral:22b", False)  # the first one ends
    await chat_lines(http, b)
    assert not [r for r in a.requests if r.path == "/api/chat"]  # still drained
    b.set_draining("a", "codestral:22b", False)
    b.set_draining("a", "codestral:22b", False)  # an extra end is harmless
    await chat_lines(http, b)
    assert [r for r in a.requests if r.path == "/api/chat"]
    b.set_draining("a", "codestral:22b", True)  # and does not leave a debt behind
    a.requests.clear()
    await chat_lines(http, b)
    assert not [r for r in a.requests if r.path == "/api/chat"]


async def test_static_model_list_restricts_a_node(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b", "qwq:32b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([NodeSpec("a", a.url, models=["qwq:32b"]), NodeSpec("c", c.url)])
    await chat_lines(http, b)
    assert not [r for r in a.requests if r.path == "/api/chat"]


async def test_fleet_wide_listings_are_the_union(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b", "all-minilm:22m"])
    c = await sim.add_node(name="c", models=["codestral:22b", "all-minilm:22m"])
    async with http.post(c.url + "/api/generate", json={"model": "codestral:22b"}) as r:
        assert r.status == 200
    b = await make_balancer([a, c])
    async with http.get(b.url + "/api/tags") as r:
        names = sorted(m["name"] for m in (await r.json())["models"])
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert names == ["all-minilm:22m", "codestral:22b", "qwq:32b"]
    async with http.get(b.url + "/v1/models") as r:
        data = (await r.json())["data"]
    assert sorted(m["id"] for m in data) == names
    assert {m["object"] for m in data} == {"model"}
    async with http.get(b.url + "/api/ps") as r:
        assert [m["name"] for m in (await r.json())["models"]] == ["codestral:22b"]
    # a node that goes down keeps its last known models in the listing
    a.set_fault(Fault.REFUSE)
    async with http.get(b.url + "/api/tags") as r:
        assert sorted(m["name"] for m in (await r.json())["models"]) == names


async def tag_names(http, b) -> tuple[list[str], float]:
    t0 = time.monotonic()
    async with http.get(b.url + "/api/tags") as r:
        assert r.status == 200
        names = sorted(m["name"] for m in (await r.json())["models"])
    return names, time.monotonic() - t0


async def test_frozen_node_does_not_delay_listings(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c], poll_interval=5.0)
    a.set_fault(Fault.FREEZE)  # a paused VM: its sockets stay open, nothing answers
    try:
        for _ in range(2):  # Open WebUI asks each time it lists models
            names, took = await tag_names(http, b)
            assert took < 1.5
            assert names == ["codestral:22b", "qwq:32b"]  # a's models as last polled
    finally:
        a.set_fault(Fault.NONE)


async def test_never_polled_frozen_node_costs_at_most_the_connect_timeout(
        sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    a.set_fault(Fault.FREEZE)
    try:
        for interval in (0.0, 5.0):  # without and with background polls
            b = await make_balancer([a, c], poll_interval=interval)
            names, took = await tag_names(http, b)
            assert took < 1.5  # connect timeout 0.5 s
            assert names == ["codestral:22b"]
    finally:
        a.set_fault(Fault.NONE)
    # once it answers again, its models are back without waiting for a restart
    await until(lambda: "qwq:32b" in (state(b, "a").models or ()), 10.0)
    assert (await tag_names(http, b))[0] == ["codestral:22b", "qwq:32b"]


async def test_listings_without_background_polls_are_current(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b"])
    b = await make_balancer([a], poll_interval=0.0)
    a.install("codestral:22b")
    assert (await tag_names(http, b))[0] == ["codestral:22b", "qwq:32b"]


async def test_model_retrieve_routes_to_a_node_with_it(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["qwq:32b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    async with http.get(b.url + "/v1/models/codestral:22b") as r:
        assert r.status == 200 and (await r.json())["id"] == "codestral:22b"
    async with http.get(b.url + "/v1/models/nope:1") as r:
        assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"
    async with http.post(b.url + "/api/show", json={"model": "qwq:32b"}) as r:
        assert r.status == 200 and "details" in await r.json()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/pull", {"model": "qwq:32b"}),
    ("POST", "/api/create", {"model": "x", "from": "qwq:32b"}),
    ("POST", "/api/copy", {"source": "qwq:32b", "destination": "y"}),
    ("DELETE", "/api/delete", {"model": "qwq:32b"}),
    ("POST", "/api/push", {"model": "qwq:32b"}),
    ("POST", "/api/blobs/sha256:" + "0" * 64, None),
])
async def test_management_is_refused(sim, make_balancer, http, method, path, body) -> None:
    node = await sim.add_node(name="a", models=["qwq:32b"])
    b = await make_balancer([node])
    async with http.request(method, b.url + path, json=body) as r:
        assert r.status == 403
        assert "desired_state.toml" in (await r.json())["error"]
    assert not [r for r in node.requests if r.path == path]


async def test_management_can_be_allowed(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="a", models=["qwq:32b"])
    b = await make_balancer([node], refuse_management=False)
    async with http.post(b.url + "/api/copy", json={"source": "qwq:32b", "destination": "y"}) as r:
        assert r.status == 200
    assert "y:latest" in node.installed_models()


async def test_headers_then_silence_is_retried_on_the_next_node(sim, make_balancer, http) -> None:
    hang = await sim.add_node(name="hang", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    hang.set_fault(Fault.HANG_AFTER_HEADERS)
    b = await make_balancer([hang, ok])
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and broke is None and lines[-1]["done"]
    assert state(b, "hang").reliability == "Unreliable"
    assert b.metrics.retries_total == 1


async def test_upstream_error_status_is_passed_through(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="a", models=["codestral:22b"])
    node.set_fault(Fault.HTTP_500)
    b = await make_balancer([node])
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 500 and "error" in await r.json()


async def test_big_bodies_and_query_strings_pass(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="a", models=["codestral:22b"], timing=Timing.instant())
    b = await make_balancer([node])
    big = {**CHAT, "stream": False, "messages": [{"role": "user", "content": "x" * 1_500_000}]}
    payload = io.BytesIO(json.dumps(big).encode())  # aiohttp warns about big raw bytes
    async with http.post(b.url + "/api/chat?x=%2F1", data=payload) as r:
        assert r.status == 200 and (await r.json())["done"] is True
    assert node.requests[-1].body["messages"][0]["content"] == "x" * 1_500_000


async def test_blob_upload_streams_through_when_allowed(sim, make_balancer, http) -> None:
    import hashlib

    node = await sim.add_node(name="a", models=["qwq:32b"])
    b = await make_balancer([node], refuse_management=False)
    data = b"GGUF" + b"\0" * 100_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with http.post(b.url + "/api/blobs/" + digest, data=data) as r:
        assert r.status == 201
    async with http.head(b.url + "/api/blobs/" + digest) as r:
        assert r.status == 200


async def test_node_that_lost_the_model_is_skipped(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    a.set_fault(Fault.MODEL_NOT_FOUND)  # deleted behind the balancer's back
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and broke is None and lines[-1]["done"]
    assert state(b, "a").models == () and state(b, "a").reliability == "Reliable"
    # the only node left without it: its own 404 passes through
    b.replace_nodes([NodeSpec("a", a.url)])
    await b.refresh()
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 404 and "not found" in (await r.json())["error"]


async def test_busy_node_503_is_retried_elsewhere(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    a.set_fault(Fault.HTTP_503_BUSY)
    b = await make_balancer([a, c])
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and broke is None and lines[-1]["done"]
    assert state(b, "a").reliability == "Reliable"
    c.set_fault(Fault.HTTP_503_BUSY)
    async with http.post(b.url + "/api/chat", json=CHAT) as r:
        assert r.status == 503 and "server busy" in (await r.json())["error"]


async def test_conversation_returns_to_the_node_with_its_kv_cache(sim, make_balancer, http) -> None:
    a = await sim.add_node(name="a", models=["codestral:22b"])
    c = await sim.add_node(name="c", models=["codestral:22b"])
    b = await make_balancer([a, c])
    history = [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Write a sort in C."},
               {"role": "assistant", "content": "void sort(int *a, int n) {...}"},
               {"role": "user", "content": "Now in Rust."}]
    a.set_fault(Fault.SLOW_TOKENS, delay=0.5)
    held = await http.post(b.url + "/api/chat", json=CHAT)  # a is busy, so c gets the chat
    try:
        await chat_lines(http, b, {**CHAT, "messages": history})
    finally:
        held.close()
    a.clear_fault()
    await until(lambda: state(b, "a").in_flight == 0)
    follow_up = history + [{"role": "assistant", "content": "fn sort(v: &mut [i32]) {...}"},
                           {"role": "user", "content": "And in Go?"}]
    status, lines, _ = await chat_lines(http, b, {**CHAT, "messages": follow_up})
    assert status == 200 and lines[-1]["done"]
    assert len([r for r in c.requests if r.path == "/api/chat"]) == 2  # not the first-listed a
    unrelated = [{"role": "user", "content": "Hello"}] * 6
    await chat_lines(http, b, {**CHAT, "messages": unrelated})
    assert len([r for r in a.requests if r.path == "/api/chat"]) == 2  # back to list order
