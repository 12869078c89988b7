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
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from . import errors, gojson
from .budget import BODIES_PER_BUDGET, BodyBudget
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


ERROR_BODY = 64 * 1024  # an error answer longer than this is not compared with others


@dataclass(frozen=True)
class Suspect:
    """A node's error answer to this request, not yet counted against it."""
    node: Node
    error: str
    said: tuple[int, bytes]  # status and body


async def _read_some(content: aiohttp.StreamReader, first: bytes, limit: int) -> bytes:
    """`first` and what follows, until the end or `limit` bytes."""
    data = first
    while len(data) <= limit and not content.at_eof():
        chunk = await content.readany()
        if not chunk:
            break
        data += chunk
    return data


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


def _gone(request: web.BaseRequest) -> bool:
    """The client closed its connection (a queued request must not run for no one)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Proxy:
    def __init__(self, fleet: Fleet, settings: Settings, session: aiohttp.ClientSession,
                 fleetwide: FleetWide) -> None:
        self.fleet = fleet
        self.session = session
        self.fleetwide = fleetwide
        self.waitlist = WaitList(fleet, fleet.knowledge)
        # Open WebUI task requests under way per node, stoppable for a person (waitlist.py)
        self.tasks_running: dict[str, dict[int, asyncio.Task[Any]]] = {}
        self.preempted: set[int] = set()
        self.waitlist.tasks_on = self._tasks_on
        self.waitlist.preempt = self._preempt
        self.ready = asyncio.Event()  # set once the first polls are in (server.py)
        self.bodies = BodyBudget()
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
        if not self.ready.is_set():
            await self.ready.wait()  # the port opened before the first polls: bounded wait
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
                return await self.fleetwide.answer(request, info, frozenset(self.runner_of))
            if request.body_exists and (length is None or length > SMALL_BODY):
                return await self.route(request, info, request.content)  # streamed as it comes
            return await self.route(request, info, await request.read())
        if s.queue_timeout <= 0 and path in INFERENCE_PATHS and not self.fleet.any_free():
            # no node at all, every node busy or ruled out by the polls: 503 whatever the model
            blind = decide(self.fleet.snapshot(), RequestInfo("inference", path, uses_slot=True))
            if isinstance(blind, Reject) and blind.status == 503 and not await self._revived():
                self.fleet.metrics.rejected_total += 1
                return json_response(request, 503, blind.message)
        if length is not None and length > s.max_body:
            return self._too_large(request)
        held = 0  # bytes of this body counted in the budget (budget.py)
        try:
            if length and not self.bodies.try_take(length, self._budget()):
                if not await self.bodies.take(length, self._budget(), s.queue_timeout):
                    return self._no_room(request)
            held = length or 0
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
                if size > held:  # no Content-Length: counted as it comes
                    if not await self.bodies.take(size - held, self._budget(), s.queue_timeout):
                        return self._no_room(request)
                    held = size
                chunks.append(chunk)
            body = b"".join(chunks)
            chunks.clear()
            try:
                body, info = self._as_ollama_reads(method, path, body)
            except gojson.BadJson as exc:
                return self._refuse(request, 400, str(exc))
            return await self.route(request, info, body)
        finally:
            if held:
                self.bodies.give(held)

    def _as_ollama_reads(self, method: str, path: str, body: bytes) -> tuple[bytes, RequestInfo]:
        """The body decoded as the node will decode it (Go: keys case-insensitive, the later
        one wins) and forwarded so, with the declared parameters applied: what the route and
        the parameters see is what Ollama runs. The decoded object is dropped on return: only
        the bytes stay in memory while the answer runs."""
        s = self.settings
        try:
            parsed, rewrite = gojson.decode(body) if body else (None, False)
        except gojson.BadJson:
            raise
        except ValueError:  # not JSON: the node answers it
            parsed, rewrite = None, False
        data = parsed if isinstance(parsed, dict) else {}
        if rewrite:
            body = gojson.encode(data)
        if s.model_params:
            body, _ = applied(path, body, s.model_params, s.apply_model_params, self._has_model, data)
        return body, classify(method, path, body, data, s.tasks)

    def _budget(self) -> int:
        s = self.settings
        return max(s.max_body, s.bodies_budget or BODIES_PER_BUDGET * s.max_body)

    def _no_room(self, request: web.BaseRequest) -> web.Response:
        resp = self._refuse(request, 503, (
            f"the balancer holds {self.bodies.held // 2**20} MiB of request bodies, its limit: "
            f"retry in a moment"))
        resp.headers["Retry-After"] = "1"
        return resp

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

    async def _revived(self) -> bool:
        """Nothing can serve a request: before a 503, ask the nodes the polls ruled out again,
        for at most the connect timeout, so a network that came back is served at once instead
        of after the next poll. True when one of them is a candidate again."""
        return await self.fleetwide.pollers.recheck(self.settings.connect_timeout)

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
        rechecked = False
        suspects: list[Suspect] = []
        last_error: errors.UpstreamError | None = None
        deadline = time.monotonic() + self.settings.queue_timeout
        if info.task is not None and self.settings.task_timeout > 0:
            deadline = min(deadline, time.monotonic() + self.settings.task_timeout)
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
                decision, est = await self.waitlist.place(
                    info, job, user, frozenset(tried), deadline, lambda: _gone(request))
            else:
                decision = await self._decide(info, tried, deadline)
            if isinstance(decision, TooLong):
                metrics.rejected_total += 1
                resp = json_response(request, 503, decision.message)
                resp.headers["Retry-After"] = str(decision.retry_after)
                return resp
            if isinstance(decision, Reject):
                if decision.status == 503 and not rechecked and decision.code != "gone":
                    rechecked = True
                    if await self._revived():
                        continue
                if decision.code != "gone":
                    metrics.rejected_total += 1
                return self._reject(request, info, decision, last_error)
            if not await self._take_shared(info, decision):
                continue
            node = self.fleet.reserve(decision, info.uses_slot, info.conversation, info)
            tried.add(node.name)
            if job is not None:
                self._started(info, node, job, est or self.waitlist.estimate_for(node.name, job))
            if info.task is not None and by_cost:
                result = await self._task_attempt(request, info, node, data, tried, suspects)
                if result is None:  # stopped for a person: back to the queue
                    tried.discard(node.name)
                    continue
            else:
                result = await self._attempt(request, info, node, data, tried, suspects)
            if isinstance(result, web.StreamResponse):
                return result
            last_error = result
            if data is request.content:  # an upload stream cannot be replayed
                return json_response(request, 502, str(last_error))
            metrics.retries_total += 1

    async def _task_attempt(self, request: web.BaseRequest, info: RequestInfo, node: Node,
                            data: Any, tried: set[str], suspects: list[Suspect]
                            ) -> web.StreamResponse | errors.UpstreamError | None:
        """An Open WebUI task on `node`, stoppable for a person (None: it was stopped before
        its answer began; the node saw a disconnect and stopped)."""
        me = asyncio.current_task()
        assert me is not None
        running = self.tasks_running.setdefault(node.name, {})
        running[id(info)] = me
        try:
            return await self._attempt(request, info, node, data, tried, suspects)
        except asyncio.CancelledError:
            if id(info) in self.preempted and me.uncancel() == 0:
                self.fleet.metrics.tasks.preempted_total += 1
                return None
            raise
        finally:
            running.pop(id(info), None)
            self.preempted.discard(id(info))

    def _tasks_on(self, node: str) -> int:
        return len(self.tasks_running.get(node, ()))

    def _preempt(self, node: str) -> None:
        """Stop one task on `node` whose answer has not begun (one at a time per node)."""
        running = self.tasks_running.get(node) or {}
        if any(key in self.preempted for key in running):
            return
        started = self.fleet.knowledge.node(node).running
        for key, task in running.items():
            run = started.get(key)
            if run is not None and run.first_at is not None:
                continue  # its answer is coming: let it end
            self.preempted.add(key)
            task.cancel()
            log.info("an Open WebUI task on %s makes way for a person", node)
            return

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
        knowledge = self.fleet.knowledge
        held = job.model in node.loaded or knowledge.node(node.name).model == job.model
        knowledge.started(id(info), node.name, job, est, time.monotonic())
        tasks = self.fleet.metrics.tasks
        if info.task is not None:
            tasks.served_total += 1
            if not held:
                tasks.model_loads_caused += 1
                log.info("%s task on %s loads %s (no node that holds it was free in time)",
                         info.task, node.name, job.model)
        if est.load > 0:
            self.fleet.metrics.count_model_load(job.model)

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
                       data: Any, tried: set[str], suspects: list[Suspect]
                       ) -> web.StreamResponse | errors.UpstreamError:
        """Serve the request from `node`; an error result means nothing reached the client
        yet, so the caller may try the next node.

        Reliability changes only on node faults: an error answer (5xx) that another node gave
        word for word is the client's (a wrong option type fails the same everywhere) and is
        passed on, no node marked. So a node's error answer is held as a suspect while the
        next node is tried; it counts against its node once another node does otherwise."""
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
                    self.fleet.metrics.observe_first_token(info.model, waited)
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
            if (upstream.status >= 500 and upstream.status != 503
                    and info.kind in ("inference", "model_info")):
                try:
                    first = await _read_some(upstream.content, first, ERROR_BODY)
                except UPSTREAM_ERRORS as exc:
                    failure = upstream_error(node.name, exc, self.settings.silence_timeout,
                                             "in its error answer", self.settings.connect_timeout)
                    event, error = Event.FAILED, str(failure)
                    return failure
                said = (upstream.status, first) if upstream.content.at_eof() else None
                if said is not None and any(s.said == said for s in suspects):
                    event = Event.CLIENT_ERROR  # the same answer from two nodes: passed on
                    suspects.clear()
                elif said is not None and self._worth_retrying(info, node, upstream.status, tried):
                    event = Event.CLIENT_ERROR  # held: it counts once another node differs
                    suspects.append(Suspect(node, f"node {node.name}: {status_text}", said))
                    return errors.UpstreamError(node.name, status_text)
            if event is None and self._worth_retrying(info, node, upstream.status, tried):
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
            if event is Event.CLIENT_ERROR:
                pass
            elif upstream.status == 503:
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
            if suspects and event in (None, Event.COMPLETED, Event.FAILED):
                for held in suspects:  # another node did otherwise: their errors were theirs
                    self.fleet.release(held.node, Event.FAILED, held.error, slot=False)
                suspects.clear()
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
