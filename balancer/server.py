"""Balancer: server wiring, live node list, graceful drain.

aiohttp's low-level web.Server with handler_cancellation=True: a client that goes
away cancels its handler at once, so the proxy closes the upstream at once.

Start-up: bind (waiting for a previous balancer on the same port to let go of it) and listen
at once, then poll every node once (or until the connect timeout passes); requests that
arrive meanwhile are held until then, so none is refused and none is routed blind.
Shutdown: stop listening first, so a successor can bind at once, then drain.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import time
from collections import Counter

import aiohttp
from aiohttp import web

from .classify import normalize_model
from .config import NodeSpec, Settings
from .fleet import Fleet, Metrics, NodeState
from .fleetwide import FleetWide
from .guard import GuardedServer, default_max_connections
from .pollers import Pollers, listed_models, model_name
from .proxy import Proxy
from .warm import Warmer

log = logging.getLogger("balancer")
BIND_WAIT = 10.0  # seconds to wait for a previous balancer to release the port


def _request_factory(max_body, message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
    return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                           client_max_size=max_body)


async def bind(host: str, port: int, wait: float = BIND_WAIT) -> socket.socket:
    """A socket bound to (host, port), not listening yet. While another process still
    listens there (a previous balancer that is stopping), try again for up to `wait` s."""
    deadline = time.monotonic() + wait
    logged = False
    while True:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            # SO_REUSEADDR: bind even while old connections of a stopped balancer linger
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            if not logged:
                logged = True
                log.info("%s:%d is in use (a previous balancer stopping?): waiting up to %g s",
                         host, port, wait)
        await asyncio.sleep(0.05)


class Balancer:
    def __init__(self, settings: Settings | None = None, nodes: list[NodeSpec] | None = None
                 ) -> None:
        self.settings = settings or Settings()
        self.fleet = Fleet(list(nodes or []))
        self.fleet.knowledge.scale = self.settings.time_scale
        self.host = "127.0.0.1"
        self.port = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._pollers: Pollers | None = None
        self._proxy: Proxy | None = None
        self._warmer: Warmer | None = None
        self._warming: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics(self) -> Metrics:
        return self.fleet.metrics

    def states(self) -> list[NodeState]:
        return self.fleet.states()

    def queued_by_model(self) -> dict[str, int]:
        """Requests waiting in the balancer's queue now, by the model they ask for."""
        if self._proxy is None:
            return {}
        waiting = self._proxy.waitlist.waiting.values()
        return dict(Counter(w.entry.request.model or "-" for w in waiting))

    def polled_contexts(self) -> dict[str, dict[str, int]]:
        """Per node, the context_length of each loaded model as its last /api/ps said
        (Ollama before 0.6 does not say it: then nothing)."""
        out: dict[str, dict[str, int]] = {}
        if self._pollers is None:
            return out
        for (node, path), data in list(self._pollers.cache.items()):
            if path != "/api/ps":
                continue
            for entry in listed_models(data):
                ctx = entry.get("context_length")
                if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0:
                    out.setdefault(node, {})[normalize_model(model_name(entry))] = ctx
        return out

    def replace_nodes(self, nodes: list[NodeSpec]) -> None:
        """Add, remove or change nodes live; streams on removed nodes run to their end."""
        _, removed = self.fleet.replace(list(nodes))
        if self._pollers is not None:
            for node in removed:
                self._pollers.forget(node.name)
            self._pollers.sync()

    def update_settings(self, settings: Settings) -> None:
        """Apply new settings live: the next request, poll and queue wait read them; streams
        under way keep the timeouts they started with."""
        self.settings = settings
        self.fleet.knowledge.scale = settings.time_scale
        if self._proxy is not None:
            self._proxy.use(settings)
        if self._pollers is not None and self._runner is not None:
            self._pollers.use(settings.poll_interval, settings.connect_timeout)
        server = self._runner.server if self._runner is not None else None
        if isinstance(server, GuardedServer):
            server.use(settings.max_connections or default_max_connections(), settings.idle_timeout)

    def set_draining(self, node_name: str, model: str, draining: bool) -> None:
        """Pair each True with one False: overlapping drains of a model are counted."""
        self.fleet.set_draining(node_name, model, draining)

    async def refresh(self) -> None:
        """Poll every node's /api/tags and /api/ps now (e.g. after the reconciler acted)."""
        if self._pollers is not None:
            await self._pollers.poll_all()
            self._pollers.sync()  # a node found unreachable is asked again until it is back

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        s = self.settings
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              skip_auto_headers=("Accept-Encoding",))
        self._pollers = Pollers(self.fleet, self._session, s.poll_interval, s.connect_timeout)
        proxy = self._proxy = Proxy(self.fleet, s, self._session, FleetWide(self.fleet, self._pollers))
        server = GuardedServer(
            proxy.handle, metrics=self.fleet.metrics,
            max_connections=s.max_connections or default_max_connections(),
            idle_timeout=s.idle_timeout, handler_cancellation=True, access_log=None,
            request_factory=functools.partial(_request_factory, s.max_body))
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        sock: socket.socket | None = None
        try:
            sock = await bind(host, port)
            site = web.SockSite(self._runner, sock)
            await site.start()  # listens now: a client that connects is not refused
            # Know every node before the first request is routed (proxy.ready holds it): a
            # dead or frozen node costs at most the connect timeout (+1 s), then counts as
            # unreachable until a poll (or a re-check, proxy.py) finds it.
            await self._pollers.first_polls(s.connect_timeout + 1.0)
            proxy.ready.set()
        except BaseException:
            if sock is not None:
                sock.close()
            await self._pollers.stop()
            runner, self._runner = self._runner, None
            await runner.cleanup()
            await self._session.close()
            raise
        self.host, self.port = host, sock.getsockname()[1]
        self._pollers.sync()
        self._warmer = Warmer(self.fleet, self._session, lambda: self.settings)
        self._warming = asyncio.create_task(self._warmer.run(), name="warmer")
        log.info("listening on %s (up to %d connections); %s", self.url,
                 server.max_connections, self.fleet.table)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting, let open streams finish for up to drain_timeout, then cancel them."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        for site in list(runner.sites):
            await site.stop()  # closes the listening socket first: a successor can bind now
        if self._pollers is not None:
            await self._pollers.stop()
        if self._warmer is not None:
            await self._warmer.stop()
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if runner.server is not None:
            # Idle keep-alive connections close now; busy ones finish, or are cancelled at the end.
            await asyncio.sleep(0)
            runner.server.pre_shutdown()
            await runner.server.shutdown(drain_timeout)
        await runner.cleanup()
        if self._session is not None:
            await self._session.close()
        log.info("stopped")
