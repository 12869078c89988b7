"""The /v1 layer: OpenAI shapes checked by hand and by the official openai client; Anthropic and Responses."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from simulator import SimNode, Simulator, Timing

MSGS = [{"role": "user", "content": "hi"}]


async def test_chat_completion_non_streaming_shape(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "codestral:22b", "messages": MSGS})
    assert r.headers["content-type"] == "application/json" and r.content.endswith(b"}\n")
    obj = r.json()
    assert list(obj) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert obj["id"].startswith("chatcmpl-") and 0 <= int(obj["id"][9:]) <= 998
    assert obj["object"] == "chat.completion" and obj["system_fingerprint"] == "fp_ollama"
    assert obj["choices"][0]["message"]["role"] == "assistant" and obj["choices"][0]["finish_reason"] == "stop"
    u = obj["usage"]
    assert list(u) == ["prompt_tokens", "completion_tokens", "total_tokens"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


async def test_chat_completion_sse_framing(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("qwen3:32b")
    r = await client.post("/v1/chat/completions", json={
        "model": "qwen3:32b", "messages": MSGS, "stream": True, "max_tokens": 12,
        "stream_options": {"include_usage": True}})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content.endswith(b"data: [DONE]\n\n")
    events = r.content.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    first = chunks[0]
    assert list(first) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "reasoning": "Okay"}
    assert first["choices"][0]["finish_reason"] is None
    last, usage = chunks[-2], chunks[-1]
    assert last["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": "length"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12


async def test_v1_temperature_overrides_model_params_and_errors(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "codestral:22b", "messages": []})
    assert r.status_code == 400 and r.json() == {"error": {"message": "[] is too short - 'messages'",
                                                           "type": "invalid_request_error", "param": None,
                                                           "code": None}}
    r = await client.post("/v1/chat/completions", content=b"{")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/chat/completions", json={"model": "nope", "messages": MSGS})
    assert r.status_code == 404 and r.content.endswith(b"\n")
    r = await client.post("/v1/embeddings", json={"model": "codestral:22b", "input": "a", "encoding_format": "x"})
    assert r.json()["error"]["message"] == \
        "Invalid value for 'encoding_format' = x. Supported values: ['float', 'base64']."
    r = await client.post("/v1/embeddings", json={"model": "codestral:22b", "input": []})
    assert r.json()["error"]["message"] == "invalid input"


async def test_completions_and_embeddings_and_models(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/v1/completions", json={"model": "codestral:22b", "prompt": "def f(", "stream": True})
    chunk = json.loads(r.content.decode().split("\n\n")[0][6:])
    assert list(chunk) == ["id", "object", "created", "choices", "model", "system_fingerprint"]
    assert chunk["object"] == "text_completion" and chunk["id"].startswith("cmpl-")
    assert r.content.endswith(b"data: [DONE]\n\n")
    r = await client.post("/v1/completions", json={"model": "codestral:22b", "prompt": "x", "max_tokens": 2})
    obj = r.json()
    assert list(obj) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert obj["choices"][0]["finish_reason"] == "length"
    node.install("all-minilm")
    r = await client.post("/v1/embeddings", json={"model": "all-minilm", "input": ["a", "b"]})
    obj = r.json()
    assert list(obj) == ["object", "data", "model", "usage"]
    assert [d["index"] for d in obj["data"]] == [0, 1] and len(obj["data"][0]["embedding"]) == 384
    r = await client.post("/v1/embeddings", json={"model": "all-minilm", "input": "a", "encoding_format": "base64"})
    assert len(base64.b64decode(r.json()["data"][0]["embedding"])) == 384 * 4
    r = await client.get("/v1/models")
    data = r.json()["data"]
    assert {d["id"] for d in data} == {"codestral:22b", "all-minilm:latest"}
    assert list(data[0]) == ["id", "object", "created", "owned_by"] and data[0]["owned_by"] == "library"
    r = await client.get("/v1/models/codestral:22b")
    assert r.json()["id"] == "codestral:22b"
    r = await client.get("/v1/models/nope")
    assert r.json() == {"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": None,
                                  "code": None}}


async def test_official_openai_client(node: SimNode) -> None:
    async with openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="unused") as oa:
        done = await oa.chat.completions.create(model="codestral:22b", messages=MSGS)
        assert done.choices[0].message.content.startswith("Simulated answer")
        stream = await oa.chat.completions.create(model="codestral:22b", messages=MSGS, stream=True,
                                                  stream_options={"include_usage": True})
        parts = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
        assert text == done.choices[0].message.content and parts[-1].usage.completion_tokens > 0
        models = await oa.models.list()
        assert [m.id for m in models.data] == ["codestral:22b"]
        comp = await oa.completions.create(model="codestral:22b", prompt="x")
        assert comp.choices[0].text
        with pytest.raises(openai.NotFoundError):
            await oa.chat.completions.create(model="nope", messages=MSGS)


async def test_official_openai_client_sees_a_broken_stream(node: SimNode) -> None:
    from simulator import Fault
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=2)
    async with openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0) as oa:
        stream = await oa.chat.completions.create(model="codestral:22b", messages=MSGS, stream=True)
        parts = [c async for c in stream]   # the client accepts it: the caller must notice the missing [DONE]
    assert len(parts) == 3 and all(p.choices[0].finish_reason is None for p in parts)


async def test_responses_and_messages_only_in_newer_versions(sim: Simulator) -> None:
    old = await sim.add_node(name="old", models=["codestral:22b"], timing=Timing.instant(), version="0.13.2")
    new = await sim.add_node(name="new", models=["codestral:22b"], timing=Timing.instant(), version="0.14.0")
    async with httpx.AsyncClient() as c:
        r = await c.post(old.url + "/v1/responses", json={"model": "codestral:22b", "input": "hi"})
        assert r.status_code == 404
        r = await c.post(new.url + "/v1/responses", json={"model": "codestral:22b", "input": "hi"})
        obj = r.json()
        assert obj["object"] == "response" and obj["status"] == "completed"
        assert obj["output"][0]["content"][0]["text"].startswith("Simulated answer")
        r = await c.post(new.url + "/v1/responses", json={"model": "codestral:22b", "input": "hi", "stream": True})
        events = [e.split("\n")[0][7:] for e in r.text.split("\n\n") if e]
        assert events[0] == "response.created" and events[-1] == "response.completed"
        assert "response.output_text.delta" in events and "[DONE]" not in r.text
        seq = [json.loads(e.split("\n")[1][6:])["sequence_number"] for e in r.text.split("\n\n") if e]
        assert seq == sorted(seq)

        body = {"model": "codestral:22b", "max_tokens": 5, "messages": MSGS}
        r = await c.post(new.url + "/v1/messages", json=body)
        obj = r.json()
        assert list(obj) == ["id", "type", "role", "model", "content", "stop_reason", "usage"]
        assert obj["stop_reason"] == "max_tokens" and obj["usage"]["output_tokens"] == 5
        r = await c.post(new.url + "/v1/messages", json={**body, "stream": True})
        kinds = [e.split("\n")[0][7:] for e in r.text.split("\n\n") if e]
        assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        r = await c.post(new.url + "/v1/messages", json={"model": "nope", "max_tokens": 5, "messages": MSGS})
        err = r.json()
        assert r.status_code == 404 and err["type"] == "error" and err["error"]["type"] == "not_found_error"
        assert err["request_id"].startswith("req_")
        r = await c.post(new.url + "/v1/messages", json={"model": "codestral:22b", "messages": MSGS})
        assert r.status_code == 400 and err["error"]["message"]


async def test_newer_versions_change_shapes(sim: Simulator) -> None:
    node = await sim.add_node(name="head", models=["qwen3:32b"], timing=Timing.instant(), version="0.33.0")
    async with httpx.AsyncClient(base_url=node.url) as c:
        tags = (await c.get("/api/tags")).json()["models"]
        assert tags[0]["capabilities"] == ["completion", "tools", "thinking"]
        r = await c.post("/v1/chat/completions", json={"model": "qwen3:32b", "messages": MSGS, "stream": True})
        chunks = [json.loads(e[6:]) for e in r.text.split("\n\n")[:-2]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "reasoning": "Okay"}
        assert "role" not in chunks[1]["choices"][0]["delta"]
        assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
        assert len({ch["created"] for ch in chunks}) == 1
        await c.post("/api/generate", json={"model": "qwen3:32b"})
        assert (await c.get("/api/ps")).json()["models"][0]["context_length"] == 32768   # 24 GB VRAM tier


async def test_tool_calls_when_the_user_names_a_tool(node: SimNode) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
    ask = [{"role": "user", "content": "Use get_weather for Paris"}]
    async with httpx.AsyncClient(base_url=node.url) as c:
        r = await c.post("/api/chat", json={"model": "codestral:22b", "messages": ask, "tools": tools,
                                            "stream": False})
        call = r.json()["message"]["tool_calls"][0]
        assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"location": "value"}}
        assert call["id"].startswith("call_") and len(call["id"]) == 13
        r = await c.post("/api/chat", json={"model": "codestral:22b", "messages": MSGS, "tools": tools,
                                            "stream": False})
        assert "tool_calls" not in r.json()["message"]
    async with openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="unused") as oa:
        done = await oa.chat.completions.create(model="codestral:22b", messages=ask, tools=tools)
        assert done.choices[0].finish_reason == "tool_calls"
        assert json.loads(done.choices[0].message.tool_calls[0].function.arguments) == {"location": "value"}
        stream = await oa.chat.completions.create(model="codestral:22b", messages=ask, tools=tools, stream=True)
        parts = [p async for p in stream]
        assert parts[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
        assert parts[-1].choices[0].finish_reason == "tool_calls"


async def test_effective_options_precedence(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("c30", from_="codestral:22b", parameters={"temperature": 0.1, "num_ctx": 8192})
    await client.post("/api/chat", json={"model": "c30", "messages": MSGS})
    assert node.last_options["temperature"] == 0.1 and node.last_options["stop"] == ["[INST]", "[/INST]"]
    await client.post("/api/chat", json={"model": "c30", "messages": MSGS, "options": {"temperature": 0.5}})
    assert node.last_options["temperature"] == 0.5
    await client.post("/v1/chat/completions", json={"model": "c30", "messages": MSGS})
    assert (node.last_options["temperature"], node.last_options["top_p"]) == (1.0, 1.0)   # /v1 overrides
    await client.post("/v1/chat/completions", json={"model": "c30", "messages": MSGS, "temperature": 0.2,
                                                     "max_tokens": 3, "stop": "x"})
    assert (node.last_options["temperature"], node.last_options["num_predict"]) == (0.2, 3)
    assert node.last_options["stop"] == ["x"] and node.last_options["num_ctx"] == 8192
    r = await client.get("/api/version")
    assert r.json() == {"version": node.version}
