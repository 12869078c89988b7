"""One aiohttp application per simulated node: routes, request log, connection-level faults."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import anthropic, models_api, native, openai_compat
from .faults import BUSY_ERROR, CutConnection, Fault, StreamCut, reset_transport
from .node import RecordedRequest, SimNode
from .wire import RAW, HTTPError, error_response, native_json, text

REC: web.RequestKey[RecordedRequest] = web.RequestKey("rec")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NodeHandler = Callable[[SimNode, web.Request], Awaitable[web.StreamResponse]]

_KNOWN_PATHS = ("/", "/api/version", "/api/tags", "/api/ps", "/api/show", "/api/pull",
                "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/generate",
                "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions",
                "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/messages",
                "/v1/responses")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
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


def _bind(node: SimNode, handler: NodeHandler) -> Handler:
    """A route handler that hands `node` to `handler`: every handler is told its node."""
    async def bound(request: web.Request) -> web.StreamResponse:
        return await handler(node, request)
    return bound


def node_middleware(node: SimNode) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _serve(node, request, handler)
    return middleware


async def _serve(node: SimNode, request: web.Request, handler: Handler) -> web.StreamResponse:
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


async def root(node: SimNode, request: web.Request) -> web.StreamResponse:
    return text("Ollama is running")


async def version(node: SimNode, request: web.Request) -> web.StreamResponse:
    return await native_json(request, {"version": node.version})


async def tags(node: SimNode, request: web.Request) -> web.StreamResponse:
    models = node.state.tags(capabilities=node.version_at_least(0, 30, 0))
    return await native_json(request, {"models": models})


async def ps(node: SimNode, request: web.Request) -> web.StreamResponse:
    return await native_json(request, {"models": node.state.ps()})


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Record the status once headers go out (a stream may still be cut later); Go's
    net/http sends no Server header."""
    response.headers.popall("Server", None)
    rec = request.get(REC)
    if rec is not None and rec.status is None:
        rec.status = response.status


def build_app(node: SimNode) -> web.Application:
    app = web.Application(middlewares=[node_middleware(node)], client_max_size=256 * 1024**2)
    app.on_response_prepare.append(_on_prepare)
    r = app.router
    r.add_get("/", _bind(node, root))
    r.add_get("/api/version", _bind(node, version))
    r.add_get("/api/tags", _bind(node, tags))
    r.add_get("/api/ps", _bind(node, ps), allow_head=False)
    r.add_post("/api/show", _bind(node, models_api.show))
    r.add_post("/api/pull", _bind(node, models_api.pull))
    r.add_post("/api/push", _bind(node, models_api.push))
    r.add_post("/api/create", _bind(node, models_api.create))
    r.add_post("/api/copy", _bind(node, models_api.copy))
    r.add_delete("/api/delete", _bind(node, models_api.delete))
    r.add_route("HEAD", "/api/blobs/{digest}", _bind(node, models_api.blob_head))
    r.add_post("/api/blobs/{digest}", _bind(node, models_api.blob_upload))
    r.add_post("/api/generate", _bind(node, native.generate))
    r.add_post("/api/chat", _bind(node, native.chat))
    r.add_post("/api/embed", _bind(node, native.embed))
    r.add_post("/api/embeddings", _bind(node, native.embeddings))
    r.add_post("/v1/chat/completions", _bind(node, openai_compat.chat_completions))
    r.add_post("/v1/completions", _bind(node, openai_compat.completions))
    r.add_post("/v1/embeddings", _bind(node, openai_compat.embeddings))
    r.add_get("/v1/models", _bind(node, openai_compat.list_models), allow_head=False)
    r.add_get("/v1/models/{model}", _bind(node, openai_compat.retrieve_model), allow_head=False)
    if node.version_at_least(0, 13, 3):
        r.add_post("/v1/responses", _bind(node, anthropic.responses))
    if node.version_at_least(0, 14, 0):
        r.add_post("/v1/messages", _bind(node, anthropic.messages))
    return app
