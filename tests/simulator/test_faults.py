"""Every fault mode, seen from a client, and client-disconnect detection."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from simulator import Fault, SimNode, Simulator, Timing

CHAT = {"model": "codestral:22b", "messages": [{"role": "user", "content": "hi"}]}


async def slow_node(sim: Simulator, **kw) -> SimNode:
    return await sim.add_node(name="slow", models=["codestral:22b"],
                              timing=Timing(gen_tps=50, load_delay=0), reply_tokens=200, **kw)


async def test_refuse_then_recover_on_the_same_port(client: httpx.AsyncClient, node: SimNode) -> None:
    assert (await client.get("/api/version")).status_code == 200      # a keep-alive connection exists
    port = node.port
    node.set_fault(Fault.REFUSE)
    with pytest.raises(httpx.TransportError):
        await client.get("/api/version")
    async with httpx.AsyncClient() as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(node.url + "/api/version")
    node.clear_fault()
    assert node.port == port
    async with httpx.AsyncClient() as fresh:
        r = await fresh.get(node.url + "/api/version")
    assert r.status_code == 200


async def test_no_answer_records_the_request_and_the_client_leaving(client: httpx.AsyncClient,
                                                                    node: SimNode) -> None:
    node.set_fault(Fault.NO_ANSWER)
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/api/tags", timeout=0.3)
    await node.wait_for(lambda: node.requests[-1].client_disconnected)
    assert node.requests[-1].path == "/api/tags" and node.requests[-1].status is None
    node.clear_fault()
    assert (await client.get("/api/tags")).status_code == 200


async def test_hang_after_headers(client: httpx.AsyncClient, node: SimNode) -> None:
    node.set_fault(Fault.HANG_AFTER_HEADERS)
    assert (await client.get("/api/tags")).status_code == 200          # not an inference path
    async with client.stream("POST", "/api/chat", json=CHAT, timeout=httpx.Timeout(5, read=0.3)) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        with pytest.raises(httpx.ReadTimeout):
            await r.aread()


async def test_fail_mid_stream_native_and_non_streaming(client: httpx.AsyncClient, node: SimNode) -> None:
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=3)
    r = await client.post("/api/chat", json=CHAT)
    body = r.content.decode().splitlines()
    assert r.status_code == 200 and len(body) == 4
    assert json.loads(body[-1]) == {"error": "an error was encountered while running the model: unexpected EOF"}
    assert all('"done":true' not in line for line in body)
    r = await client.post("/api/chat", json={**CHAT, "stream": False})
    assert (r.status_code, r.json()) == (500, {"error": "an error was encountered while running the model: "
                                                        "unexpected EOF"})
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=1, message="boom")
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 2 and "[DONE]" not in r.text           # an empty chunk, then the end, no [DONE]
    assert json.loads(events[-1][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_rst_and_fin_mid_stream(client: httpx.AsyncClient, node: SimNode) -> None:
    for fault in (Fault.RST_MID_STREAM, Fault.FIN_MID_STREAM):
        node.set_fault(fault, after_chunks=2)
        got: list[bytes] = []
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with client.stream("POST", "/api/chat", json=CHAT) as r:
                async for line in r.aiter_lines():
                    got.append(line)
        assert len(got) <= 2
        assert node.requests[-1].cut_by_fault and not node.requests[-1].client_disconnected
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post("/api/chat", json={**CHAT, "stream": False})
    assert node.cancelled_generations == 0


async def test_slow_tokens(client: httpx.AsyncClient, node: SimNode) -> None:
    base = (await client.post("/api/chat", json={**CHAT, "stream": False})).json()
    node.set_fault(Fault.SLOW_TOKENS, delay=0.02)
    slow = (await client.post("/api/chat", json={**CHAT, "stream": False})).json()
    assert slow["eval_duration"] >= base["eval_duration"] + slow["eval_count"] * 20_000_000


async def test_http_errors_and_model_not_found(client: httpx.AsyncClient, node: SimNode) -> None:
    node.set_fault(Fault.HTTP_500)
    r = await client.post("/api/chat", json=CHAT)
    assert (r.status_code, r.json()) == (500, {"error": "llama runner process has terminated: exit status 2"})
    assert (await client.get("/api/tags")).status_code == 200
    node.set_fault(Fault.HTTP_503_BUSY)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"
    node.set_fault(Fault.MODEL_NOT_FOUND)
    r = await client.post("/api/chat", json=CHAT)
    assert (r.status_code, r.json()) == (404, {"error": "model 'codestral:22b' not found"})
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.json() == {"error": {"message": "model 'codestral:22b' not found", "type": "not_found_error",
                                  "param": None, "code": None}}
    assert node.installed_models() == ["codestral:22b"]
    node.set_fault(Fault.HTTP_500, paths=("/api/tags",), message="broken")
    assert (await client.get("/api/tags")).json() == {"error": "broken"}


async def test_freeze_stalls_then_resumes(sim: Simulator) -> None:
    node = await sim.add_node(name="f", models=["codestral:22b"], timing=Timing(gen_tps=200, load_delay=0),
                              reply_tokens=30)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        async with c.stream("POST", "/api/chat", json=CHAT) as r:
            it = r.aiter_lines()
            await it.__anext__()
            node.set_fault(Fault.FREEZE)
            with pytest.raises(httpx.ReadTimeout):
                await c.get("/api/version", timeout=0.3)
            before = len(node.requests)
            await asyncio.sleep(0.2)
            node.clear_fault()
            rest = [line async for line in it]
        assert json.loads(rest[-1])["done"] is True
        assert len(node.requests) == before
        assert (await c.get("/api/version")).status_code == 200


async def test_disk_full(client: httpx.AsyncClient, node: SimNode) -> None:
    node.set_fault(Fault.DISK_FULL)
    r = await client.post("/api/pull", json={"model": "qwq:32b"})
    last = json.loads(r.content.splitlines()[-1])
    assert r.status_code == 200 and last["error"].endswith("-partial: no space left on device")
    r = await client.post("/api/pull", json={"model": "qwq:32b", "stream": False})
    assert r.status_code == 500 and "qwq:32b" not in node.installed_models()
    assert (await client.post("/api/chat", json={**CHAT, "stream": False})).status_code == 200


async def test_client_disconnect_stops_the_generation_promptly(sim: Simulator) -> None:
    node = await slow_node(sim)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        async with c.stream("POST", "/api/chat", json=CHAT) as r:
            it = r.aiter_lines()
            await it.__anext__()
        await node.wait_for(lambda: node.cancelled_generations == 1, timeout=1.0)
        rec = [x for x in node.requests if x.path == "/api/chat"][-1]
        assert rec.client_disconnected and rec.status == 200   # headers had gone out
        # the slot is free again: the next request does not wait for the 4 s the first would have taken
        r = await c.post("/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 2}}, timeout=1.0)
        assert r.status_code == 200


async def test_disconnect_while_queued_or_not_streaming(sim: Simulator) -> None:
    node = await slow_node(sim)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/api/chat", json={**CHAT, "stream": False}, timeout=0.3)
        await node.wait_for(lambda: node.cancelled_generations == 1, timeout=1.0)
        assert all(not r.sem.locked() and r.busy == 0 for r in node.state.runners.values())


async def test_quick_refuse_toggles_end_in_the_last_wish(sim: Simulator) -> None:
    node = await sim.add_node(name="t", timing=Timing.instant())
    for _ in range(3):
        node.set_fault(Fault.REFUSE)
        node.clear_fault()
    async with httpx.AsyncClient() as c:
        assert (await c.get(node.url + "/api/version")).status_code == 200
        node.clear_fault()
        node.set_fault(Fault.REFUSE)
        node.clear_fault()
        node.set_fault(Fault.REFUSE)
        with pytest.raises(httpx.TransportError):   # the pooled connection was reset
            await c.get(node.url + "/api/version")
        with pytest.raises(httpx.ConnectError):     # and nothing listens any more
            await c.get(node.url + "/api/version")
    await sim.remove_node(node)   # stopping a refusing node is clean
