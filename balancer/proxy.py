"""One request: choose -> reserve -> connect (retry before the first byte) -> pump -> release.

The only module besides pollers/fleetwide that talks to nodes. Client disconnects arrive
as a cancellation of the handler (the server runs with handler_cancellation=True), so the
upstream response is closed at once, whatever the pump is awaiting at that moment.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from . import errors
from .classify import INFERENCE_PATHS, RequestInfo, classify, is_management, normalize_model
from .config import Settings
from .fleet import Fleet, Node
from .fleetwide import FleetWide
from .framing import EndChecker
from .params import applied
from .scheduling import Event, Pick, Reject, Wait, decide
from .cost import Estimate, Job
from .waitlist import TooLong, WaitList, job_of

log = logging.getLogger("balancer")

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length"))
# aiohttp's server decodes a request body in exactly these codings (one, not a list); the node
# gets it decoded and without the header. Any other coding passes through untouched, as sent.
DECODED = frozenset({"gzip", "deflate", "br", "zstd"})
BIG_BODY = 512 * 1024  # sent in pieces so one request can't hog the event loop
SMALL_BODY = 64 * 1024  # a body the route needs no look into is read (and retried) up to this
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ValueError)  # ValueError: bad URL


def json_response(request: web.BaseRequest, status: int, message: str) -> web.Response:
    body, ctype = errors.error_body(request.path, status, message)
    return web.Response(status=status, body=body, headers={"Content-Type": ctype})


def _payload(data: Any) -> Any:
    if isinstance(data, bytes):
        return io.BytesIO(data) if len(data) > BIG_BODY else (data or None)
    return data  # a streamed upload


def ollama_answer(info: RequestInfo, content_type: str) -> bool:
    """Whether an answer to a model route looks like Ollama's: JSON, NDJSON or SSE. An HTML page
    (a web server or captive portal at the node's address) is a failure of the node."""
    if info.kind not in ("inference", "model_info"):
        return True
    ctype = content_type.lower()
    return "json" in ctype or "text/event-stream" in ctype


def upstream_error(node: str, exc: BaseException, silence: float, when: str,
                   connect: float = 0.0) -> errors.UpstreamError:
    """Map a client-library exception, once, to the most specific balancer error."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # also a TimeoutError: check it first
        # the usual sign of a switched-off PC: it never answered the TCP handshake
        return errors.ConnectFailed(node, f"{when}: no connection within {connect:g} s")
    if isinstance(exc, TimeoutError):
        return errors.Silence(node, f"{when}: no byte for {silence:g} s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        reset = "reset" in str(exc).lower()
        text = "connection reset" if reset else "connection closed before the end of the body"
        return errors.StreamBroken(node, f"{when}: {text}")
    text = f"{when}: {str(exc) or type(exc).__name__}"
    if isinstance(exc, (aiohttp.ClientConnectorError, ValueError)):
        return errors.ConnectFailed(node, text)
    return errors.StreamBroken(node, text)


class Proxy:
    def __init__(self, fleet: Fleet, settings: Settings, session: aiohttp.ClientSession,
                 fleetwide: FleetWide) -> None:
        self.fleet = fleet
        self.session = session
        self.fleetwide = fleetwide
        self.waitlist = WaitList(fleet, fleet.knowledge)
        self.use(settings)

    def use(self, settings: Settings) -> None:
        """Read `settings` from the next request on (a request under way keeps its own)."""
        self.settings = settings
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=settings.connect_timeout,
            sock_read=settings.silence_timeout or None)
        # a -v1 model runs on its base model's runner (params.py): the cost model must know
        # that it is loaded where the base is, or it would plan a load (and an eviction)
        self.runner_of = {normalize_model(p.v1_model): name
                          for name, p in settings.model_params.items() if p.v1_model}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Refuse what can be refused before reading the body; read only a body the route
        must look into (its model), up to max_body; stream any other large body."""
        self.fleet.metrics.requests_total += 1
        method, path = request.method, request.path
        s = self.settings
        if s.refuse_management and is_management(method, path):
            return json_response(request, 403, s.management_message)
        looks_inside = method == "POST" and (path in INFERENCE_PATHS or path == "/api/show")
        length = request.content_length
        if not looks_inside:
            info = classify(method, path)
            if info.kind == "listing":
                return await self.fleetwide.answer(request, info)
            if request.body_exists and (length is None or length > SMALL_BODY):
                return await self.route(request, info, request.content)  # streamed as it comes
            return await self.route(request, info, await request.read())
        if s.queue_timeout <= 0 and path in INFERENCE_PATHS and not self.fleet.any_free():
            # no node at all, every node busy or ruled out by the polls: 503 whatever the model
            blind = decide(self.fleet.snapshot(), RequestInfo("inference", path, uses_slot=True))
            if isinstance(blind, Reject) and blind.status == 503:
                self.fleet.metrics.rejected_total += 1
                return json_response(request, 503, blind.message)
        if length is not None and length > s.max_body:
            return self._too_large(request)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:  # a client that stops sending its body is not waited for forever
                chunk = await asyncio.wait_for(request.content.readany(), s.idle_timeout or None)
            except TimeoutError:
                self.fleet.metrics.connections_timed_out_total += 1
                return self._refuse(request, 408, f"no byte of the request body for "
                                    f"{s.idle_timeout:g} s (idle_timeout)")
            if not chunk:
                break
            size += len(chunk)
            if size > s.max_body:
                return self._too_large(request)
            chunks.append(chunk)
        body = b"".join(chunks)
        parsed = None
        if s.model_params:
            body, parsed = applied(path, body, s.model_params, s.apply_model_params, self._has_model)
        return await self.route(request, classify(method, path, body, parsed), body)

    def _too_large(self, request: web.BaseRequest) -> web.Response:
        limit = self.settings.max_body
        return self._refuse(request, 413, (
            f"request body larger than the balancer's limit of {limit // 2**20} MiB "
            f"({limit} bytes): raise max_body in [balancer] if such requests are expected"))

    def _refuse(self, request: web.BaseRequest, status: int, message: str) -> web.Response:
        self.fleet.metrics.rejected_total += 1
        resp = json_response(request, status, message)
        resp.force_close()  # the unread rest of the body must not be taken for a next request
        return resp

    def _has_model(self, model: str) -> bool:
        # the nodes' own `models`, not a snapshot: this runs for every /v1 request it rewrites
        return any(n.models is not None and model in n.models for n in self.fleet.nodes.values())

    async def route(self, request: web.BaseRequest, info: RequestInfo,
                    data: Any) -> web.StreamResponse:
        """Choose a node, serve from it; a failure before the first byte tries the next one.
        In queueing mode an inference request waits in the balancer's queue for the node with
        the soonest first token (waitlist.py); otherwise the peer's rule decides (decide())."""
        by_cost = (self.settings.queue_timeout > 0 and info.kind == "inference"
                   and isinstance(data, bytes))
        metrics = self.fleet.metrics
        tried: set[str] = set()
        last_error: errors.UpstreamError | None = None
        deadline = time.monotonic() + self.settings.queue_timeout
        job = job_of(info, data, self.runner_of) \
            if info.kind == "inference" and isinstance(data, bytes) else None
        if self.fleet.shared is not None and (info.uses_slot or by_cost):
            await self.fleet.shared.refresh()  # the other balancers' slots and caches
        user = (request.headers.get("X-OpenWebUI-User-Id")
                or request.headers.get("X-OpenWebUI-User-Email") or request.remote or "")
        if job is not None:
            self.fleet.knowledge.saw(user, job.model)
        while True:
            est: Estimate | None = None
            if by_cost:
                assert job is not None
                decision, est = await self.waitlist.place(info, job, user, frozenset(tried),
                                                          deadline)
            else:
                decision = await self._decide(info, tried, deadline)
            if isinstance(decision, TooLong):
                metrics.rejected_total += 1
                resp = json_response(request, 503, decision.message)
                resp.headers["Retry-After"] = str(decision.retry_after)
                return resp
            if isinstance(decision, Reject):
                metrics.rejected_total += 1
                return self._reject(request, info, decision, last_error)
            if not await self._take_shared(info, decision):
                continue
            node = self.fleet.reserve(decision, info.uses_slot, info.conversation, info)
            tried.add(node.name)
            if job is not None:
                self._started(info, node, job, est or self.waitlist.estimate_for(node.name, job))
            result = await self._attempt(request, info, node, data, tried)
            if isinstance(result, web.StreamResponse):
                return result
            last_error = result
            if data is request.content:  # an upload stream cannot be replayed
                return json_response(request, 502, str(last_error))
            metrics.retries_total += 1

    async def _decide(self, info: RequestInfo, tried: set[str], deadline: float
                      ) -> Pick | Reject:
        """The peer's rule: a free node now, else wait for a change until the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            decision = decide(self.fleet.snapshot(), info, frozenset(tried), can_wait=remaining > 0)
            if not isinstance(decision, Wait):
                return decision
            self.fleet.metrics.queued += 1
            try:
                await self.fleet.wait_changed(remaining)
            finally:
                self.fleet.metrics.queued -= 1

    def _timeout_for(self, info: RequestInfo, node: Node) -> aiohttp.ClientTimeout:
        """In queueing mode an expected wait before the first byte (a model load, Ollama's
        queue) is not silence; without a queue the peer's plain silence timeout holds."""
        if not self.settings.silence_timeout or self.settings.queue_timeout <= 0:
            return self.timeout
        allowance = self.fleet.knowledge.first_byte_allowance(id(info), node.name)
        if allowance <= 0:
            return self.timeout
        return aiohttp.ClientTimeout(total=None, connect=None,
                                     sock_connect=self.settings.connect_timeout,
                                     sock_read=self.settings.silence_timeout + allowance)

    def _started(self, info: RequestInfo, node: Node, job: Job, est: Estimate) -> None:
        self.fleet.knowledge.started(id(info), node.name, job, est, time.monotonic())
        if est.load > 0:
            self.fleet.metrics.model_loads_caused += 1

    async def _take_shared(self, info: RequestInfo, pick: Pick) -> bool:
        """[cluster]: take the slot in Redis too; False when another balancer filled it."""
        shared = self.fleet.shared
        if shared is None or not info.uses_slot:
            return True
        if await shared.take(pick.node, id(info)):
            return True
        self.fleet.notify()  # re-plan: that node is full
        await self.fleet.wait_changed(0.25)  # never spin on a full node: a change, or a moment
        await shared.refresh()
        return False

    def _reject(self, request: web.BaseRequest, info: RequestInfo, decision: Reject,
                last_error: errors.UpstreamError | None) -> web.Response:
        if decision.code == "no_model" and last_error is not None:
            # the nodes that might have had it failed: that is not a missing model
            return json_response(request, 502, f"every node that could serve it failed; "
                                 f"last error: {last_error}")
        if decision.code == "no_model":
            model = info.model_as_sent or info.model or ""
            return json_response(request, 404, errors.not_found_message(info.path, model))
        if decision.code == "exhausted":
            return json_response(request, 502, f"{decision.message}; last error: {last_error}")
        return json_response(request, decision.status, decision.message)

    def _worth_retrying(self, info: RequestInfo, node: Node, status: int,
                        tried: set[str]) -> bool:
        """A node that failed (5xx) or lacks the model after all (404) is not the last word;
        any other 4xx is the client's and passes through."""
        if status == 404 and info.model is not None and info.kind in ("inference", "model_info"):
            self.fleet.forget_model(node, info.model)  # deleted since the last poll
        elif status < 500:
            return False
        return isinstance(decide(self.fleet.snapshot(), info, frozenset(tried)), Pick)

    async def _attempt(self, request: web.BaseRequest, info: RequestInfo, node: Node,
                       data: Any, tried: set[str]
                       ) -> web.StreamResponse | errors.UpstreamError:
        """Serve the request from `node`; an error result means nothing reached the client
        yet, so the caller may try the next node."""
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
                   and not (k.lower() == "content-encoding" and v.strip().lower() in DECODED)]
        upstream: aiohttp.ClientResponse | None = None
        sent = clean = False
        # None until the outcome is known; an unforeseen end counts against the node.
        event: Event | None = None
        error: str | None = None
        final: dict[str, object] | None = None  # Ollama's last chunk, to learn its rates
        try:
            try:
                upstream = await self.session.request(
                    request.method, URL(node.spec.base_url + request.raw_path, encoded=True),
                    data=_payload(data),
                    headers=headers, timeout=self._timeout_for(info, node), allow_redirects=False)
                first = await upstream.content.readany()
                waited = self.fleet.knowledge.first_byte(id(info), node.name)
                if waited is not None:
                    self.fleet.metrics.first_token_seconds.observe(waited)
            except UPSTREAM_ERRORS as exc:
                failure = upstream_error(node.name, exc, self.settings.silence_timeout,
                                         "before first byte", self.settings.connect_timeout)
                event, error = Event.FAILED, str(failure)
                return failure
            ctype = upstream.headers.get("Content-Type", "")
            status_text = f"answered HTTP {upstream.status}"
            if not ollama_answer(info, ctype):
                # not Ollama (a web server's page): never passed on as if it were an answer
                what = ctype or "without a Content-Type"
                failure = errors.UpstreamError(node.name, f"{status_text} {what}, not Ollama's")
                event, error = Event.FAILED, str(failure)
                return failure
            if self._worth_retrying(info, node, upstream.status, tried):
                # Nothing reached the client yet and another node can answer instead.
                if upstream.status >= 500 and upstream.status != 503:
                    event, error = Event.FAILED, f"node {node.name}: {status_text}"
                else:
                    event = Event.BUSY
                return errors.UpstreamError(node.name, status_text)
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            resp.headers.extend(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)
            length = upstream.headers.get("Content-Length")
            if length is not None:
                if request.method == "HEAD":
                    resp.headers["Content-Length"] = length  # describes the GET body
                else:
                    resp.content_length = int(length)
            checker = EndChecker(info.framing, ctype, info.kind == "inference")
            checker.feed(first)
            await resp.prepare(request)
            sent = True
            chunk = first
            content = upstream.content
            # A chunk that arrived with the node's end goes out with ours: one write, not two.
            while chunk and not content.at_eof():
                await resp.write(chunk)
                try:
                    chunk = await content.readany()
                except UPSTREAM_ERRORS as exc:
                    event, error = Event.FAILED, str(upstream_error(
                        node.name, exc, self.settings.silence_timeout, "mid-stream",
                        self.settings.connect_timeout))
                    await self._cut(request, resp, info, node, error)
                    return resp
                checker.feed(chunk)
            clean = True
            if not checker.complete:
                await resp.write(chunk)
                # Ollama ends a broken /v1 stream cleanly; cut it so the client notices.
                event, error = Event.FAILED, f"node {node.name}: stream ended without its end marker"
                await self._cut(request, resp, info, node, error)
                return resp
            if upstream.status == 503:
                event = Event.BUSY
            elif upstream.status >= 500:
                event, error = Event.FAILED, f"node {node.name}: {status_text}"
            else:
                event, final = Event.COMPLETED, checker.final
            await resp.write_eof(chunk)
            return resp
        except asyncio.CancelledError:
            # the client disconnected (or the server stops); _cut's own close also lands here
            event = event or Event.CLIENT_CANCELLED
            raise
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            event = event or Event.CLIENT_CANCELLED  # writing to the client failed: it went away
            return web.Response(status=499) if not sent else resp
        except Exception as exc:
            error = error or f"node {node.name}: unexpected {type(exc).__name__}: {exc}"
            raise
        finally:
            if upstream is not None:
                if clean:
                    upstream.release()  # keep the connection for the next request
                else:
                    upstream.close()  # the node sees the disconnect and stops generating
            self.fleet.knowledge.ended(id(info), node.name, final)
            self.fleet.release(node, event or Event.FAILED, error, slot=info.uses_slot)
            if self.fleet.shared is not None and info.uses_slot:
                self.fleet.shared.release(node.name, id(info))

    async def _cut(self, request: web.BaseRequest, resp: web.StreamResponse, info: RequestInfo,
                   node: Node, error: str) -> None:
        """End a broken stream so the client notices: an error line (NDJSON), then no terminator."""
        if info.framing == "ndjson":
            line = json.dumps({"error": f"balancer: {error}"}, separators=(",", ":"))
            try:
                await resp.write(line.encode() + b"\n")
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                pass
        if request.transport is not None:
            request.transport.close()
        resp.force_close()
        await asyncio.sleep(0)
