"""Client connections: an idle/header timeout and a bound on how many are open.

aiohttp's `keepalive_timeout` closes a connection that has no request in progress, counted
from when it opened or its last answer ended; so a client that sends half a request header
and waits is closed after `idle_timeout` seconds, like one that sends nothing. On top:
at most `max_connections` are open. When a new one would pass the bound, the oldest
connection with no request in progress (idle, or still sending its header) is closed to
make room; if every connection is serving a request, the new one is refused. Either way
the balancer logs it once per episode and counts it for /metrics.

Every port the daemon listens on is guarded so: the balancer's (GuardedServer) and the status
page's (GuardedAppRunner, an aiohttp Application behind the same server), so a flood of
half-sent requests on one cannot take the open files the other, or a pass, needs.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .fleet import Metrics

log = logging.getLogger("balancer")


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to the hard one; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


STATUS_MAX_CONNECTIONS = 64  # the daemon's status port: a few browsers and a scraper


def default_max_connections() -> int:
    """Each client connection may need one to a node, plus a margin for polls, logs, files
    and the daemon's status port (its own bound)."""
    return max(64, (raise_open_files_limit() - 64 - STATUS_MAX_CONNECTIONS) // 2)


class _Handler(RequestHandler):
    server: GuardedServer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.admit(self, transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.open.pop(self, None)
        self.server.metrics.connections_open = len(self.server.open)
        super().connection_lost(exc)

    def _process_keepalive(self) -> None:
        closing = self._force_close
        super()._process_keepalive()
        if self._force_close and not closing:
            self.server.metrics.connections_timed_out_total += 1

    @property
    def idle(self) -> bool:
        """No request in progress: waiting for (the rest of) a request header."""
        return not getattr(self, "_request_in_progress", True)


class GuardedServer(web.Server):
    def __init__(self, handler: Any, *, metrics: Metrics, max_connections: int,
                 idle_timeout: float, port: str = "balancer", **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=idle_timeout, **kwargs)
        self.port = port  # which port, for the log line
        self.metrics = metrics
        self.max_connections = max_connections
        self.open: dict[_Handler, None] = {}  # in the order they opened
        self._warned = False

    def use(self, max_connections: int, idle_timeout: float) -> None:
        """New limits, live: the bound from the next connection on, the idle timeout for
        connections opened from now on."""
        self.max_connections = max_connections
        self._kwargs["keepalive_timeout"] = idle_timeout

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.server = self
        return handler

    def admit(self, handler: _Handler, transport: asyncio.BaseTransport) -> None:
        if len(self.open) >= self.max_connections:
            victim = next((h for h in self.open if h.idle), None)
            if not self._warned:
                self._warned = True
                log.warning("%s port: connection limit reached (%d open, max %d): closing "
                            "idle connections first, then refusing new ones%s", self.port,
                            len(self.open), self.max_connections,
                            "; raise max_connections (and LimitNOFILE) if these are real "
                            "clients" if self.port == "balancer" else "")
            self.metrics.connections_refused_total += 1
            if victim is None:
                transport.abort()  # type: ignore[attr-defined]
                return
            self.open.pop(victim, None)
            victim.force_close()
            if victim.transport is not None:
                victim.transport.abort()
        elif self._warned and len(self.open) < self.max_connections * 9 // 10:
            self._warned = False
            log.info("%s port: connections back under the limit (%d open)", self.port,
                     len(self.open))
        self.open[handler] = None
        self.metrics.connections_open = len(self.open)


class GuardedAppRunner(web.AppRunner):
    """An aiohttp Application served by a GuardedServer (its own bound and counters)."""

    def __init__(self, app: web.Application, *, metrics: Metrics, max_connections: int,
                 idle_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = (metrics, max_connections, idle_timeout)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts and freezes the app
        metrics, max_connections, idle_timeout = self.guard
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             metrics=metrics, max_connections=max_connections,
                             idle_timeout=idle_timeout, port="status", access_log=None)
