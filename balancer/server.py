"""Balancer: server wiring, live node list, graceful drain.

aiohttp's low-level web.Server with handler_cancellation=True: a client that goes
away cancels its handler at once, so the proxy closes the upstream at once.
"""
from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
from aiohttp import web

from .config import NodeSpec, Settings
from .fleet import Fleet, Metrics, NodeState
from .fleetwide import FleetWide
from .pollers import Pollers
from .proxy import Proxy

log = logging.getLogger("balancer")
MAX_BODY = 1024**3  # chat bodies carry base64 images; aiohttp's default cap is 1 MiB


def _request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
    return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                           client_max_size=MAX_BODY)


class Balancer:
    def __init__(self, settings: Settings | None = None, nodes: list[NodeSpec] | None = None
                 ) -> None:
        self.settings = settings or Settings()
        self.fleet = Fleet(list(nodes or []))
        self.host = "127.0.0.1"
        self.port = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._pollers: Pollers | None = None
        self._proxy: Proxy | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics(self) -> Metrics:
        return self.fleet.metrics

    def states(self) -> list[NodeState]:
        return self.fleet.states()

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
        if self._proxy is not None:
            self._proxy.use(settings)
        if self._pollers is not None and self._runner is not None:
            self._pollers.use(settings.poll_interval, settings.connect_timeout)

    def set_draining(self, node_name: str, model: str, draining: bool) -> None:
        """Pair each True with one False: overlapping drains of a model are counted."""
        self.fleet.set_draining(node_name, model, draining)

    async def refresh(self) -> None:
        """Poll every node's /api/tags and /api/ps now (e.g. after the reconciler acted)."""
        if self._pollers is not None:
            await self._pollers.poll_all()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        s = self.settings
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              skip_auto_headers=("Accept-Encoding",))
        self._pollers = Pollers(self.fleet, self._session, s.poll_interval, s.connect_timeout)
        proxy = self._proxy = Proxy(self.fleet, s, self._session, FleetWide(self.fleet, self._pollers))
        server = web.Server(proxy.handle, handler_cancellation=True, access_log=None,
                            request_factory=_request_factory)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fast restarts
            sock.bind((host, port))
            site = web.SockSite(self._runner, sock)
            await site.start()
        except OSError:
            sock.close()
            runner, self._runner = self._runner, None
            await runner.cleanup()
            await self._session.close()
            raise
        self.host, self.port = host, sock.getsockname()[1]
        # Know the models before the first request; a dead node costs at most the connect timeout.
        try:
            await asyncio.wait_for(self._pollers.poll_all(), s.connect_timeout + 1.0)
        except TimeoutError:
            pass
        self._pollers.sync()
        log.info("listening on %s; %s", self.url, self.fleet.table)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting, let open streams finish for up to drain_timeout, then cancel them."""
        if self._runner is None:
            return
        if self._pollers is not None:
            await self._pollers.stop()
        runner, self._runner = self._runner, None
        for site in list(runner.sites):
            await site.stop()  # closes the listening socket
        if runner.server is not None:
            # Idle keep-alive connections close now; busy ones finish, or are cancelled at the end.
            await asyncio.sleep(0)
            runner.server.pre_shutdown()
            await runner.server.shutdown(drain_timeout)
        await runner.cleanup()
        if self._session is not None:
            await self._session.close()
        log.info("stopped")
