"""Wire contract against the recorded shapes in the reference (framing, headers, key order, errors)."""

from __future__ import annotations

import json

import httpx

from simulator import SimNode

from .conftest import lines

NATIVE = "application/json; charset=utf-8"


async def test_root_and_version_are_byte_exact(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert (r.status_code, r.headers["content-type"], r.content) == \
        (200, "text/plain; charset=utf-8", b"Ollama is running")
    r = await client.head("/")
    assert r.headers["content-length"] == "17" and r.content == b""
    r = await client.get("/api/version")
    assert r.content == b'{"version":"0.13.5"}' and "server" not in r.headers
    assert r.headers["content-length"] == "20" and r.headers["content-type"] == NATIVE


async def test_unknown_route_wrong_method_and_trailing_slash(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/nothing")
    assert (r.status_code, r.headers["content-type"], r.text) == (404, "text/plain", "404 page not found")
    assert "server" not in r.headers
    r = await client.get("/api/chat")
    assert (r.status_code, r.headers["content-type"], r.text) == (405, "text/plain", "405 method not allowed")
    assert (await client.head("/api/ps")).status_code == 405
    r = await client.get("/api/tags/")
    assert r.status_code == 301 and r.headers["location"] == "/api/tags"
    r = await client.post("/api/show/", json={})
    assert r.status_code == 307
    r = await client.post("/v1/messages", json={})   # 0.13.5 has no Anthropic layer
    assert (r.status_code, r.text) == (404, "404 page not found")


async def test_tags_shape_key_order_and_sorting(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("qwq:32b")
    r = await client.get("/api/tags")
    assert r.headers["content-type"] == NATIVE and not r.content.endswith(b"\n")
    models = r.json()["models"]
    assert [m["name"] for m in models] == ["qwq:32b", "codestral:22b"]   # most recent first
    m = models[0]
    assert list(m) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert list(m["details"]) == ["parent_model", "format", "family", "families", "parameter_size",
                                  "quantization_level"]
    assert m["details"]["parent_model"] == "" and len(m["digest"]) == 64
    assert m["details"] == {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                            "parameter_size": "32.8B", "quantization_level": "Q4_K_M"}
    assert m["modified_at"][:2] == "20" and m["modified_at"][10] == "T"


async def test_empty_tags_and_ps(sim) -> None:
    node = await sim.add_node(name="empty")
    async with httpx.AsyncClient(base_url=node.url) as c:
        assert (await c.get("/api/tags")).content == b'{"models":[]}'
        assert (await c.get("/api/ps")).content == b'{"models":[]}'
        assert (await c.get("/v1/models")).content == b'{"object":"list","data":null}\n'


async def test_big_native_json_is_chunked(client: httpx.AsyncClient, node: SimNode) -> None:
    for name in ("qwq:32b", "qwen3:32b", "llama3.2:1b", "qwen2.5-coder:32b", "llava", "nomic-embed-text"):
        node.install(name)
    r = await client.get("/api/tags")
    assert len(r.content) > 2048
    assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers


async def test_body_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", content=b"")
    assert (r.status_code, r.content) == (400, b'{"error":"missing request body"}')
    r = await client.post("/api/chat", content=b"xyz")
    assert r.json() == {"error": "invalid character 'x' looking for beginning of value"}
    r = await client.post("/api/chat", json={"model": 5})
    assert r.json() == {"error": "json: cannot unmarshal number into Go struct field ChatRequest.model of type string"}
    assert r.headers["content-type"] == NATIVE


async def test_native_error_catalogue(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("nomic-embed-text")
    cases = [
        ("/api/generate", {"model": "x"}, 404, "model 'x' not found"),
        ("/api/generate", {"model": ""}, 404, "model '' not found"),
        ("/api/chat", {"model": "x", "messages": []}, 404, "model 'x' not found"),
        ("/api/chat", {"model": ""}, 400, "model is required"),
        ("/api/show", {"model": "x"}, 404, "model 'x' not found"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/embed", {"model": "x", "input": "a"}, 404, 'model "x" not found, try pulling it first'),
        ("/api/embeddings", {"model": "x", "prompt": "a"}, 404, 'model "x" not found, try pulling it first'),
        ("/api/copy", {"source": "x", "destination": "y"}, 404, 'model "x" not found'),
        ("/api/generate", {"model": "nomic-embed-text", "prompt": "a"}, 400,
         '"nomic-embed-text" does not support generate'),
        ("/api/chat", {"model": "nomic-embed-text", "messages": [{"role": "user", "content": "a"}]}, 400,
         '"nomic-embed-text" does not support chat'),
        ("/api/chat", {"model": "codestral:22b", "messages": [], "think": True}, 400,
         '"codestral:22b" does not support thinking'),
        ("/api/generate", {"model": "codestral:22b", "keep_alive": "abc"}, 400, 'time: invalid duration "abc"'),
        ("/api/generate", {"model": "codestral:22b", "keep_alive": "-1"}, 400,
         'time: missing unit in duration "-1"'),
        ("/api/generate", {"model": "codestral:22b", "prompt": "a", "top_logprobs": 21}, 400,
         "top_logprobs must be between 0 and 20"),
        ("/api/embed", {"model": "codestral:22b", "input": "a"}, 501, "this model does not support embeddings"),
        ("/api/embed", {"model": "nomic-embed-text", "input": 5}, 400, "invalid input type"),
        ("/api/pull", {"model": "bad name!"}, 400, "invalid model name"),
        ("/api/create", {"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ("/api/create", {"model": "x", "files": {"/abs.gguf": "sha256:" + "0" * 64}}, 400,
         "file path must be relative"),
        ("/api/create", {"model": "x", "files": {"a.gguf": ""}}, 400, "invalid digest format"),
    ]
    for path, body, status, message in cases:
        r = await client.post(path, json=body)
        assert (r.status_code, r.json()) == (status, {"error": message}), (path, body)
        assert r.headers["content-type"] == NATIVE
    r = await client.request("DELETE", "/api/delete", json={"model": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'x' not found"})
    r = await client.post("/api/chat", json={"model": "codestral:22b", "messages": [{"role": "user", "content": "a"}],
                                             "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert r.status_code == 200   # codestral supports tools
    node.install("llava")
    r = await client.post("/api/chat", json={"model": "llava", "messages": [{"role": "user", "content": "a"}],
                                             "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert r.json() == {"error": "registry.ollama.ai/library/llava:latest does not support tools"}


async def test_chat_stream_framing_and_key_order(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/api/chat", json={
            "model": "codestral:22b", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        assert r.headers["transfer-encoding"] == "chunked"
        raw = [c async for c in r.aiter_raw()]
    body = b"".join(raw)
    objs = [json.loads(x) for x in lines(body)]
    first, last = objs[0], objs[-1]
    assert list(first) == ["model", "created_at", "message", "done"]
    assert first["message"]["role"] == "assistant" and first["done"] is False
    assert first["created_at"].endswith("Z")
    assert list(last) == ["model", "created_at", "message", "done", "done_reason", "total_duration",
                          "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                          "eval_duration"]
    assert last["message"] == {"role": "assistant", "content": ""} and last["done_reason"] == "stop"
    assert "".join(o["message"]["content"] for o in objs).startswith("Simulated answer from gpu-1")
    assert all(b'"done":true' not in line for line in lines(body)[:-1])


async def test_generate_final_has_context_unless_raw(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "hi", "stream": False})
    obj = r.json()
    assert list(obj)[:6] == ["model", "created_at", "response", "done", "done_reason", "context"]
    assert r.headers["content-type"] == NATIVE and not r.content.endswith(b"\n")
    assert isinstance(obj["context"], list) and obj["eval_count"] > 0
    r = await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "hi", "stream": False,
                                                 "raw": True})
    assert "context" not in r.json()


async def test_thinking_model_streams_thinking(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("qwen3:32b")
    r = await client.post("/api/chat", json={"model": "qwen3:32b", "messages": [{"role": "user", "content": "hi"}]})
    objs = [json.loads(x) for x in lines(r.content)]
    assert list(objs[0]["message"]) == ["role", "content", "thinking"]
    assert objs[0]["message"]["content"] == "" and objs[0]["message"]["thinking"] == "Okay"
    r = await client.post("/api/chat", json={"model": "qwen3:32b", "think": False, "stream": False,
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert "thinking" not in r.json()["message"]
    r = await client.post("/api/generate", json={"model": "qwen3:32b", "prompt": "hi", "stream": False})
    assert list(r.json())[:5] == ["model", "created_at", "response", "thinking", "done"]
    r = await client.post("/api/chat", json={"model": "qwen3:32b", "think": "low",
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert r.json() == {"error": 'think value "low" is not supported for this model'}


async def test_num_predict_and_stop(client: httpx.AsyncClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    r = await client.post("/api/chat", json={"model": "codestral:22b", "messages": msgs, "stream": False,
                                             "options": {"num_predict": 3}})
    obj = r.json()
    assert (obj["done_reason"], obj["eval_count"], obj["message"]["content"]) == ("length", 3, "Simulated answer from")
    r = await client.post("/api/chat", json={"model": "codestral:22b", "messages": msgs, "stream": False,
                                             "options": {"stop": [" from"]}})
    obj = r.json()
    assert (obj["done_reason"], obj["message"]["content"]) == ("stop", "Simulated answer")


async def test_wrong_option_type_is_a_500_at_run_time(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/create", json={"model": "broken", "from": "codestral:22b",
                                               "parameters": {"num_ctx": "30000"}, "stream": False})
    assert r.status_code == 200   # no validation on create
    r = await client.post("/api/chat", json={"model": "broken", "messages": [{"role": "user", "content": "a"}]})
    assert (r.status_code, r.json()) == (500, {"error": 'option "num_ctx" must be of type integer'})


async def test_embed_shapes(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("all-minilm")
    r = await client.post("/api/embed", json={"model": "all-minilm", "input": ["a", "b"]})
    obj = r.json()
    assert list(obj) == ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
    assert len(obj["embeddings"]) == 2 and len(obj["embeddings"][0]) == 384
    assert abs(sum(v * v for v in obj["embeddings"][0]) - 1.0) < 1e-3
    assert obj["embeddings"][0] != obj["embeddings"][1]
    r = await client.post("/api/embed", json={"model": "all-minilm", "input": "a", "dimensions": 8})
    assert len(r.json()["embeddings"][0]) == 8
    r = await client.post("/api/embeddings", json={"model": "all-minilm", "prompt": "a"})
    assert list(r.json()) == ["embedding"] and len(r.json()["embedding"]) == 384
    r = await client.post("/api/embeddings", json={"model": "all-minilm", "prompt": ""})
    assert r.content == b'{"embedding":[]}'
    r = await client.post("/api/embed", json={"model": "all-minilm", "input": "word " * 600, "truncate": False})
    assert r.json() == {"error": "the input length exceeds the context length"}


async def test_dns_rebinding_guard(client: httpx.AsyncClient, node: SimNode) -> None:
    for host in ("localhost:11434", "127.0.0.1", "192.168.1.20:11434", "gpu.local", "[::1]:11434"):
        assert (await client.get("/api/version", headers={"Host": host})).status_code == 200, host
    r = await client.get("/api/version", headers={"Host": "evil.example.com"})
    assert (r.status_code, r.content) == (403, b"")
    node.host_guard = False
    assert (await client.get("/api/version", headers={"Host": "evil.example.com"})).status_code == 200


async def test_suffix_needs_insert(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "a", "suffix": "b"})
    assert r.json() == {"error": '"codestral:22b" does not support insert'}
    node.install("qwen2.5-coder:32b")
    r = await client.post("/api/generate", json={"model": "qwen2.5-coder:32b", "prompt": "a", "suffix": "b",
                                                 "stream": False})
    assert r.status_code == 200
