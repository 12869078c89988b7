"""/v1/messages (Anthropic, version >= 0.14.0) and /v1/responses (OpenAI, >= 0.13.3)."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from aiohttp import web

from . import common
from .engine import GenRequest, generation
from .stream import StreamOut
from .timing import tokenize
from .wire import RAW, SSE, HTTPError, decode_body, encoder_json, lenient_str, sse_event
from .node import SimNode

def _stop_reason(done_reason: str) -> str:
    return "max_tokens" if done_reason == "length" else "end_turn"


async def messages(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "MessagesRequest")
    name = lenient_str(body.get("model"))
    if not name:
        raise HTTPError(400, "model is required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise HTTPError(400, "max_tokens is required and must be positive")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise HTTPError(400, "messages is required")
    system = body.get("system")
    conv = [{"role": "system", "content": common.content_text(system)}] if system else []
    conv += [{"role": m.get("role", "user"), "content": common.content_text(m.get("content"))}
             for m in msgs if isinstance(m, dict)]
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "chat")
    think = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
    if think and "thinking" not in model.capabilities:
        think = False
    opts: dict[str, Any] = {"num_predict": max_tokens}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            opts[key] = body[key]
    if body.get("stop_sequences"):
        opts["stop"] = body["stop_sequences"]
    req = GenRequest(model, tokenize(common.render_chat(model, conv)), opts, None, think, False,
                     request.path, streaming=body.get("stream") is True)
    mid = f"msg_{secrets.token_hex(12)}"
    stream = body.get("stream") is True
    out = StreamOut(request, node, SSE, lambda m: sse_event(
        "error", {"type": "error", "error": {"type": "api_error", "message": m}})) \
        if stream else None
    index, current = -1, ""
    async with generation(node, req) as gen:
        if out is not None:
            await out.write(sse_event("message_start", {"type": "message_start", "message": {
                "id": mid, "type": "message", "role": "assistant", "model": name, "content": [],
                "stop_reason": None, "usage": {"input_tokens": gen.result.prompt_eval_count,
                                               "output_tokens": 0}}}))
        async for kind, piece in gen.pieces():
            if out is None:
                continue
            if kind != current:
                if index >= 0:
                    await out.write(_block_stop(index))
                index, current = index + 1, kind
                block = {"type": "thinking", "thinking": ""} if kind == "thinking" else \
                    {"type": "text", "text": ""}
                await out.write(sse_event("content_block_start", {
                    "type": "content_block_start", "index": index, "content_block": block}))
            delta = {"type": "thinking_delta", "thinking": piece} if kind == "thinking" else \
                {"type": "text_delta", "text": piece}
            await out.write(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": index, "delta": delta}))
        res = gen.result
    if out is None:
        content: list[dict[str, Any]] = []
        if res.thinking:
            content.append({"type": "thinking", "thinking": res.thinking, "signature": ""})
        content.append({"type": "text", "text": res.content})
        return await encoder_json(request, {
            "id": mid, "type": "message", "role": "assistant", "model": name, "content": content,
            "stop_reason": _stop_reason(res.done_reason),
            "usage": {"input_tokens": res.prompt_eval_count, "output_tokens": res.eval_count}})
    if index >= 0:
        await out.write(_block_stop(index))
    await out.write(sse_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": _stop_reason(res.done_reason)},
        "usage": {"output_tokens": res.eval_count}}))
    await out.write(sse_event("message_stop", {"type": "message_stop"}))
    return await out.finish()


def _block_stop(index: int) -> bytes:
    return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


def _response_input(body: dict[str, Any]) -> list[dict[str, Any]]:
    conv: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        conv.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    if isinstance(raw, str):
        conv.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and item.get("type", "message") == "message":
                conv.append({"role": item.get("role", "user"),
                             "content": common.content_text(item.get("content"))})
    else:
        raise HTTPError(400, "input is required")
    return conv


async def responses(node: SimNode, request: web.Request) -> web.StreamResponse:
    body = decode_body(request[RAW], "ResponsesRequest")
    name = lenient_str(body.get("model"))
    conv = _response_input(body)
    model = common.need_model(node, name, request.path)
    common.check_generative(model, name, "chat")
    temperature = body.get("temperature")  # 1.0 when absent; top_p is left to the model
    opts: dict[str, Any] = {"temperature": 1.0 if temperature is None else temperature}
    if body.get("top_p") is not None:
        opts["top_p"] = body["top_p"]
    if body.get("max_output_tokens") is not None:
        opts["num_predict"] = body["max_output_tokens"]
    think = "thinking" in model.capabilities
    req = GenRequest(model, tokenize(common.render_chat(model, conv)), opts, None, think, False,
                     request.path, streaming=body.get("stream") is True)
    n = random.randrange(999)
    rid, mid, created = f"resp_{n}", f"msg_{n}", int(time.time())
    stream = body.get("stream") is True
    seq = 0

    def ev(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        return sse_event(kind, {"type": kind, "sequence_number": seq - 1, **fields})

    def envelope(status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
        obj = {"id": rid, "object": "response", "created_at": created,
               "completed_at": int(time.time()) if status == "completed" else None,
               "status": status, "model": name, "output": output}
        if usage is not None:
            obj["usage"] = usage
        return obj

    def item(text: str, status: str) -> dict[str, Any]:
        parts = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"id": mid, "type": "message", "status": status, "role": "assistant",
                "content": parts if status == "completed" else []}

    out = StreamOut(request, node, SSE, lambda m: None) if stream else None
    started = False
    async with generation(node, req) as gen:
        if out is not None:
            await out.write(ev("response.created", response=envelope("in_progress", [])))
            await out.write(ev("response.in_progress", response=envelope("in_progress", [])))
        async for kind, piece in gen.pieces():
            if out is None or kind != "content":
                continue
            if not started:
                started = True
                await out.write(ev("response.output_item.added", output_index=0,
                                   item=item("", "in_progress")))
                await out.write(ev("response.content_part.added", item_id=mid, output_index=0,
                                   content_index=0, part={"type": "output_text", "text": "",
                                                          "annotations": []}))
            await out.write(ev("response.output_text.delta", item_id=mid, output_index=0,
                               content_index=0, delta=piece, logprobs=[]))
        res = gen.result
    usage = {"input_tokens": res.prompt_eval_count, "output_tokens": res.eval_count,
             "total_tokens": res.prompt_eval_count + res.eval_count}
    done_item = item(res.content, "completed")
    if out is None:
        return await encoder_json(request, envelope("completed", [done_item], usage))
    await out.write(ev("response.output_text.done", item_id=mid, output_index=0,
                       content_index=0, text=res.content, logprobs=[]))
    await out.write(ev("response.content_part.done", item_id=mid, output_index=0,
                       content_index=0, part=done_item["content"][0]))
    await out.write(ev("response.output_item.done", output_index=0, item=done_item))
    await out.write(ev("response.completed", response=envelope("completed", [done_item], usage)))
    return await out.finish()
