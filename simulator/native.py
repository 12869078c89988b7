"""Native inference endpoints: /api/chat, /api/generate, /api/embed, /api/embeddings."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from . import common
from .engine import GenRequest, generation
from .sched import get_runner, modelled_ns, release, slot
from .stream import StreamOut
from .gofmt import now_utc
from .state import InstalledModel
from .timing import NS, tokenize
from .wire import (RAW, NDJSON, HTTPError, decode_body, native_json, ndjson_line, want_str,
                   want_stream)
from .node import SimNode


async def _load_or_unload(request: web.Request, node: SimNode, model: InstalledModel,
                          options: dict[str, Any], keep: int | None, extra: dict[str, Any],
                          ) -> dict[str, Any] | None:
    """Empty prompt/messages: returns the done_reason object fields, after loading."""
    if keep == 0:
        runner = node.state.runners.get(model.weights)
        if runner is not None:
            runner.keep_alive_ns = 0
            runner.expires_ns = None
            if runner.busy == 0:
                node.state.runners.pop(model.weights, None)
        return {**extra, "done": True, "done_reason": "unload"}
    runner, _ = await get_runner(node, model, options, keep)
    release(node, runner)
    return {**extra, "done": True, "done_reason": "load"}


async def chat(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "ChatRequest")
    name = want_str(body, "model", "ChatRequest")
    if not name:
        raise HTTPError(400, "model is required")
    stream = want_stream(body, True)
    keep = common.parse_keep_alive(body)
    options = common.want_options(body)
    messages = common.check_messages(body.get("messages"))
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "chat")
    common.check_tools(body, model)
    think = common.resolve_think(body.get("think"), model, name)
    _check_logprobs(body)
    head = {"model": name, "created_at": now_utc()}
    if not messages:
        obj = await _load_or_unload(request, node, model, options, keep,
                                    {**head, "message": {"role": "assistant", "content": ""}})
        return await native_json(request, obj)
    req = GenRequest(model, tokenize(common.render_chat(model, messages)), options, keep, think,
                     bool(body.get("format")), request.path, streaming=stream,
                     tool_call=common.pick_tool(body, messages))
    out = StreamOut(request, node, NDJSON, lambda m: ndjson_line({"error": m})) if stream else None
    async with generation(node, req) as gen:
        async for kind, piece in gen.pieces():
            if out is None:
                continue
            msg: dict[str, Any] = {"role": "assistant", "content": piece if kind == "content" else ""}
            if kind == "thinking":
                msg["thinking"] = piece
            if kind == "tool":
                msg["tool_calls"] = _native_calls(gen.result.tool_calls)
            await out.write(ndjson_line({"model": name, "created_at": now_utc(), "message": msg,
                                         "done": False}))
        res = gen.result
    msg = {"role": "assistant", "content": "" if out else res.content}
    if out is None and res.thinking:
        msg["thinking"] = res.thinking
    if out is None and res.tool_calls:
        msg["tool_calls"] = _native_calls(res.tool_calls)
    final = {"model": name, "created_at": now_utc(), "message": msg, "done": True,
             "done_reason": res.done_reason, **res.metrics()}
    if out is None:
        return await native_json(request, final)
    await out.write(ndjson_line(final))
    return await out.finish()


def _native_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": common.tool_call_id(), "function": {"index": i, "name": c["name"],
                                                       "arguments": c["arguments"]}}
            for i, c in enumerate(calls)]


def _check_logprobs(body: dict[str, Any]) -> None:
    top = body.get("top_logprobs")
    if isinstance(top, int) and not 0 <= top <= 20:
        raise HTTPError(400, "top_logprobs must be between 0 and 20")


async def generate(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "GenerateRequest")
    name = want_str(body, "model", "GenerateRequest")
    stream = want_stream(body, True)
    keep = common.parse_keep_alive(body)
    options = common.want_options(body)
    prompt = want_str(body, "prompt", "GenerateRequest")
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "generate")
    if body.get("suffix") and "insert" not in model.capabilities:
        raise HTTPError(400, f'"{name}" does not support insert')
    think = common.resolve_think(body.get("think"), model, name)
    _check_logprobs(body)
    if not prompt and not body.get("images"):
        obj = await _load_or_unload(request, node, model, options, keep,
                                    {"model": name, "created_at": now_utc(), "response": ""})
        return await native_json(request, obj)
    raw = bool(body.get("raw"))
    ctx = [t for t in body.get("context") or [] if isinstance(t, int)]
    text = common.render_generate(model, prompt, body.get("system"), raw)
    req = GenRequest(model, ctx + tokenize(text), options, keep, think,
                     bool(body.get("format")), request.path, streaming=stream)
    out = StreamOut(request, node, NDJSON, lambda m: ndjson_line({"error": m})) if stream else None
    async with generation(node, req) as gen:
        async for kind, piece in gen.pieces():
            if out is None:
                continue
            chunk: dict[str, Any] = {"model": name, "created_at": now_utc(),
                                     "response": piece if kind == "content" else ""}
            if kind == "thinking":
                chunk["thinking"] = piece
            chunk["done"] = False
            await out.write(ndjson_line(chunk))
        res = gen.result
    final: dict[str, Any] = {"model": name, "created_at": now_utc(),
                             "response": "" if out else res.content}
    if out is None and res.thinking:
        final["thinking"] = res.thinking
    final.update({"done": True, "done_reason": res.done_reason})
    if not raw:
        final["context"] = res.context
    final.update(res.metrics())
    if out is None:
        return await native_json(request, final)
    await out.write(ndjson_line(final))
    return await out.finish()


def _inputs(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise HTTPError(400, "invalid input type")


async def embed_vectors(node: SimNode, model: InstalledModel, inputs: list[str],
                        options: dict[str, Any], keep: int | None, truncate: bool,
                        dims: int, normalise: bool = True,
                        ) -> tuple[list[list[float]], dict[str, int]]:
    """Queue, load, evaluate; returns vectors and the metric fields."""
    if "embedding" not in model.capabilities:
        raise HTTPError(501, "this model does not support embeddings")
    started = time.monotonic()
    runner, load_ns = await get_runner(node, model, options, keep)
    try:
        async with slot(node, runner, []):
            counts = [len(tokenize(t)) for t in inputs]
            limit = min(runner.num_ctx, model.info.context_length)
            if not truncate and any(c > limit for c in counts):
                raise HTTPError(400, "the input length exceeds the context length")
            seconds = node.timing.prompt_seconds(sum(counts))
            await node.timing.sleep(seconds)
    finally:
        release(node, runner)
    size = dims if dims and dims > 0 else model.info.embedding_length
    vectors = [common.embedding(t, size, normalise=normalise) for t in inputs]
    total = max(modelled_ns(node, time.monotonic() - started), load_ns + int(seconds * NS))
    return vectors, {"total_duration": total, "load_duration": load_ns,
                     "prompt_eval_count": sum(counts)}


async def embed(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "EmbedRequest")
    name = want_str(body, "model", "EmbedRequest")
    keep = common.parse_keep_alive(body)
    options = common.want_options(body)
    inputs = _inputs(body.get("input"))
    model = common.need_model(node, name, request.path,
                              f'model "{name}" not found, try pulling it first')
    if not inputs:
        await _load_or_unload(request, node, model, options, keep, {})
        return await native_json(request, {"model": name, "embeddings": []})
    truncate = body.get("truncate") is not False
    vectors, metrics = await embed_vectors(node, model, inputs, options, keep, truncate,
                                           int(body.get("dimensions") or 0))
    return await native_json(request, {"model": name, "embeddings": vectors,
                                       **{k: v for k, v in metrics.items() if v}})


async def embeddings(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "EmbeddingRequest")
    name = want_str(body, "model", "EmbeddingRequest")
    keep = common.parse_keep_alive(body)
    options = common.want_options(body)
    prompt = want_str(body, "prompt", "EmbeddingRequest")
    model = common.need_model(node, name, request.path,
                              f'model "{name}" not found, try pulling it first')
    if not prompt:
        await _load_or_unload(request, node, model, options, keep, {})
        return await native_json(request, {"embedding": []})
    vectors, _ = await embed_vectors(node, model, [prompt], options, keep, True, 0,
                                     normalise=False)
    return await native_json(request, {"embedding": vectors[0]})
