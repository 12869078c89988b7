"""OpenAI-compatible layer: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from typing import Any

from aiohttp import web

from . import common
from .engine import GenRequest, GenResult, generation
from .stream import StreamOut
from .native import embed_vectors
from .timing import tokenize
from .wire import RAW, SSE, HTTPError, decode_body, encoder_json, lenient_str, sse_data
from .node import SimNode


def sampling_options(body: dict[str, Any], completions: bool = False) -> dict[str, Any]:
    """The layer always sends temperature/top_p (1.0 when absent), overriding model params.
    0.13.5 has no `max_completion_tokens` field: only `max_tokens` limits the answer."""
    opts: dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        opts["num_predict"] = max_tokens
    opts["temperature"] = body.get("temperature") if body.get("temperature") is not None else 1.0
    opts["top_p"] = body.get("top_p") if body.get("top_p") is not None else 1.0
    if body.get("seed") is not None:
        opts["seed"] = body["seed"]
    stop = body.get("stop")
    if stop is not None:
        opts["stop"] = [stop] if isinstance(stop, str) else stop
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) is not None or completions:
            opts[key] = body.get(key) or 0.0
    return opts


def _usage(res: GenResult) -> dict[str, int]:
    return {"prompt_tokens": res.prompt_eval_count, "completion_tokens": res.eval_count,
            "total_tokens": res.prompt_eval_count + res.eval_count}


def _openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": common.tool_call_id(), "index": i, "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for i, c in enumerate(calls)]


def _think(body: dict[str, Any], model: Any, name: str) -> bool:
    """`reasoning_effort` becomes the think value: a level string only gpt-oss takes (400
    for any other model, as native `think: "high"`)."""
    effort = body.get("reasoning_effort") or (body.get("reasoning") or {}).get("effort")
    if effort in ("none",):
        return False
    if effort is None:
        return common.resolve_think(None, model, name)
    if model.info.family == "gptoss" and effort in ("low", "medium", "high"):
        return True
    return common.resolve_think(effort, model, name)


async def chat_completions(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "ChatCompletionRequest")
    name = lenient_str(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPError(400, f"{messages if messages is not None else 'None'} is too short - "
                        "'messages'")
    msgs = [{"role": m.get("role", "user"), "content": common.content_text(m.get("content"))}
            for m in messages if isinstance(m, dict)]
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "chat")
    common.check_tools(body, model)
    fmt = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    req = GenRequest(model, tokenize(common.render_chat(model, msgs)), sampling_options(body),
                     None, _think(body, model, name), fmt, request.path,
                     streaming=body.get("stream") is True, tool_call=common.pick_tool(body, msgs))
    cid = f"chatcmpl-{random.randrange(999)}"
    head = {"id": cid, "object": "chat.completion.chunk"}
    stream = body.get("stream") is True
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))

    newer = node.version_at_least(0, 32, 6)  # role once, empty finish delta, one `created`
    created = int(time.time())
    sent = 0

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        nonlocal sent
        if newer:
            if sent or finish is not None:
                delta = {k: v for k, v in delta.items() if k != "role"}
            if finish is not None:
                delta = {}
        sent += 1
        return {**head, "created": created if newer else int(time.time()), "model": name,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = StreamOut(request, node, SSE, lambda m: sse_data(
        chunk({"role": "assistant", "content": ""}, None))) if stream else None
    async with generation(node, req) as gen:
        async for kind, piece in gen.pieces():
            if out is None:
                continue
            delta: dict[str, Any] = {"role": "assistant", "content": piece if kind == "content" else ""}
            if kind == "thinking":
                delta["reasoning"] = piece
                if newer:
                    del delta["content"]
            if kind == "tool":
                delta["tool_calls"] = _openai_calls(gen.result.tool_calls)
            await out.write(sse_data(chunk(delta, None)))
        res = gen.result
    finish = "tool_calls" if res.tool_calls else res.done_reason
    if out is None:
        message: dict[str, Any] = {"role": "assistant", "content": res.content}
        if res.thinking:
            message["reasoning"] = res.thinking
        if res.tool_calls:
            message["tool_calls"] = _openai_calls(res.tool_calls)
        return await encoder_json(request, {
            "id": cid, "object": "chat.completion", "created": int(time.time()), "model": name,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(res)})
    await out.write(sse_data(chunk({"role": "assistant", "content": ""}, finish)))
    if include_usage:
        await out.write(sse_data({**head, "created": int(time.time()), "model": name,
                                  "system_fingerprint": "fp_ollama", "choices": [],
                                  "usage": _usage(res)}))
    await out.write(b"data: [DONE]\n\n")
    return await out.finish()


async def completions(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "CompletionRequest")
    name = lenient_str(body.get("model"))
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise HTTPError(400, "invalid prompt")
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "generate")
    req = GenRequest(model, tokenize(common.render_generate(model, prompt, None, False)),
                     sampling_options(body, completions=True), None, False, False, request.path,
                     streaming=body.get("stream") is True)
    cid = f"cmpl-{random.randrange(999)}"
    stream = body.get("stream") is True

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": int(time.time()),
                "choices": [{"text": text, "index": 0, "finish_reason": finish}],
                "model": name, "system_fingerprint": "fp_ollama"}

    out = StreamOut(request, node, SSE, lambda m: sse_data(chunk("", None))) if stream else None
    async with generation(node, req) as gen:
        async for kind, piece in gen.pieces():
            if out is not None and kind == "content":
                await out.write(sse_data(chunk(piece, None)))
        res = gen.result
    if out is None:
        return await encoder_json(request, {
            "id": cid, "object": "text_completion", "created": int(time.time()), "model": name,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": res.content, "index": 0, "finish_reason": res.done_reason}],
            "usage": _usage(res)})
    await out.write(sse_data(chunk("", res.done_reason)))
    await out.write(b"data: [DONE]\n\n")
    return await out.finish()


async def embeddings(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "EmbedRequest")
    name = lenient_str(body.get("model"))
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise HTTPError(400, f"Invalid value for 'encoding_format' = {fmt}. Supported values: "
                        "['float', 'base64'].")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise HTTPError(400, "invalid input")
    model = common.need_model(node, name, request.path,
                              f'model "{name}" not found, try pulling it first')
    vectors, metrics = await embed_vectors(node, model, inputs, {}, None, True,
                                           int(body.get("dimensions") or 0))
    data: list[dict[str, Any]] = []
    for i, vec in enumerate(vectors):
        value: Any = vec
        if fmt == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    n = metrics["prompt_eval_count"]
    return await encoder_json(request, {"object": "list", "data": data, "model": name,
                                        "usage": {"prompt_tokens": n, "total_tokens": n}})


def _entry(m: Any, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": m.modified_ns // 10**9,
            "owned_by": m.name.namespace}


async def list_models(node: SimNode, request: web.Request) -> web.StreamResponse:
    models = sorted(node.state.models.values(), key=lambda m: m.modified_ns, reverse=True)
    data = [_entry(m, m.name.short) for m in models] or None
    return await encoder_json(request, {"object": "list", "data": data})


async def retrieve_model(node: SimNode, request: web.Request) -> web.StreamResponse:
    name = request.match_info["model"]
    m = node.state.get(name)
    if m is None:
        raise HTTPError(404, f"model '{name}' not found")
    return await encoder_json(request, _entry(m, name))
