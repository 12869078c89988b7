"""One aiohttp application per simulated node: routes, request log, connection-level faults."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from . import anthropic, models_api, native, openai_compat
from .faults import BUSY_ERROR, CutConnection, Fault, StreamCut, reset_transport
from .wire import RAW, HTTPError, error_response, native_json, text

if TYPE_CHECKING:
    from .node import RecordedRequest, SimNode

NODE: web.AppKey[SimNode] = web.AppKey("node")
REC: web.RequestKey[RecordedRequest] = web.RequestKey("rec")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_KNOWN_PATHS = ("/", "/api/version", "/api/tags", "/api/ps", "/api/show", "/api/pull",
                "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/generate",
                "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions",
                "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/messages",
                "/v1/responses")


def node_of(request: web.Request) -> SimNode:
    return request.app[NODE]


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def host_allowed(host_header: str) -> bool:
    """Ollama's DNS-rebinding guard for a server listening on loopback."""
    host = host_header.lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified
    except ValueError:
        return host.endswith((".localhost", ".local", ".internal"))


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


def _hang_content_type(request: web.Request) -> str:
    return "text/event-stream" if request.path.startswith("/v1/") else "application/x-ndjson"


@web.middleware
async def node_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    from .node import RecordedRequest

    node = node_of(request)
    raw = b""
    if request.method in ("POST", "DELETE", "PUT", "PATCH") and not \
            request.path.startswith("/api/blobs/"):
        raw = await request.read()
    request[RAW] = raw
    rec = RecordedRequest(request.method, request.path, _parse_json(raw), False, None,
                          time.monotonic())
    node.requests.append(rec)
    if len(node.requests) > node.max_log:  # long-running demos: keep the newest half
        del node.requests[:len(node.requests) // 2]
    request[REC] = rec
    try:
        resp = await _dispatch(request, handler, node, rec)
        if rec.status is None:
            rec.status = resp.status
        return resp
    except (asyncio.CancelledError, ConnectionResetError):
        if not node.stopping and not rec.cut_by_fault:
            rec.client_disconnected = True
        raise


async def _dispatch(request: web.Request, handler: Handler, node: SimNode,
                    rec: RecordedRequest) -> web.StreamResponse:
    f = node.fault_state
    path = request.path
    if f.applies(Fault.REFUSE, path):
        rec.cut_by_fault = True
        reset_transport(request.transport)
        await _forever()
    if f.applies(Fault.NO_ANSWER, path):
        await _forever()
    await node.thawed()
    if node.host_guard and not host_allowed(request.headers.get("Host", "")):
        return web.Response(status=403)
    try:
        if f.applies(Fault.HANG_AFTER_HEADERS, path):
            resp = web.StreamResponse(headers={"Content-Type": _hang_content_type(request)})
            await resp.prepare(request)
            rec.status = 200
            await _forever()
        if f.applies(Fault.HTTP_500, path):
            raise HTTPError(500, f.message)
        if f.applies(Fault.HTTP_503_BUSY, path):
            raise HTTPError(503, BUSY_ERROR)
        return await handler(request)
    except HTTPError as err:
        return await error_response(request, err)
    except CutConnection as cut:
        rec.cut_by_fault = True
        if cut.fault is Fault.RST_MID_STREAM:
            reset_transport(request.transport)
        elif request.transport is not None:
            request.transport.close()
        await _forever()  # the closed connection cancels this handler
        raise
    except StreamCut as cut:
        rec.cut_by_fault = True
        rec.status = cut.resp.status
        return cut.resp
    except web.HTTPMethodNotAllowed:
        return text("405 method not allowed", 405, "text/plain")
    except web.HTTPNotFound:
        trimmed = path.rstrip("/")
        if path != "/" and path.endswith("/") and trimmed in _KNOWN_PATHS:
            status = 301 if request.method == "GET" else 307
            return web.Response(status=status, headers={"Location": trimmed})
        return text("404 page not found", 404, "text/plain")


async def root(request: web.Request) -> web.StreamResponse:
    return text("Ollama is running")


async def version(request: web.Request) -> web.StreamResponse:
    return await native_json(request, {"version": node_of(request).version})


async def tags(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    models = node.state.tags(capabilities=node.version_at_least(0, 30, 0))
    return await native_json(request, {"models": models})


async def ps(request: web.Request) -> web.StreamResponse:
    return await native_json(request, {"models": node_of(request).state.ps()})


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Record the status once headers go out (a stream may still be cut later); Go's
    net/http sends no Server header."""
    response.headers.popall("Server", None)
    rec = request.get(REC)
    if rec is not None and rec.status is None:
        rec.status = response.status


def build_app(node: SimNode) -> web.Application:
    app = web.Application(middlewares=[node_middleware], client_max_size=256 * 1024**2)
    app[NODE] = node
    app.on_response_prepare.append(_on_prepare)
    r = app.router
    r.add_get("/", root)
    r.add_get("/api/version", version)
    r.add_get("/api/tags", tags)
    r.add_get("/api/ps", ps, allow_head=False)
    r.add_post("/api/show", models_api.show)
    r.add_post("/api/pull", models_api.pull)
    r.add_post("/api/push", models_api.push)
    r.add_post("/api/create", models_api.create)
    r.add_post("/api/copy", models_api.copy)
    r.add_delete("/api/delete", models_api.delete)
    r.add_route("HEAD", "/api/blobs/{digest}", models_api.blob_head)
    r.add_post("/api/blobs/{digest}", models_api.blob_upload)
    r.add_post("/api/generate", native.generate)
    r.add_post("/api/chat", native.chat)
    r.add_post("/api/embed", native.embed)
    r.add_post("/api/embeddings", native.embeddings)
    r.add_post("/v1/chat/completions", openai_compat.chat_completions)
    r.add_post("/v1/completions", openai_compat.completions)
    r.add_post("/v1/embeddings", openai_compat.embeddings)
    r.add_get("/v1/models", openai_compat.list_models, allow_head=False)
    r.add_get("/v1/models/{model}", openai_compat.retrieve_model, allow_head=False)
    if node.version_at_least(0, 13, 3):
        r.add_post("/v1/responses", anthropic.responses)
    if node.version_at_least(0, 14, 0):
        r.add_post("/v1/messages", anthropic.messages)
    return app
