"""Background polls of each node's /api/tags and /api/ps, feeding fleet.py.

Polls say which models a node has and which are loaded, and which nodes are no candidates
at all: one that did not answer (unreachable) or answered something that is not Ollama's
(a web server's page at its address) gets no requests until a later poll finds it well.
Runtime failures stay the authority on a reliable node's reliability.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp

from .classify import normalize_model
from .fleet import Fleet, Node

log = logging.getLogger("balancer")


class NotOllama(Exception):
    """The node answered, but not as Ollama does."""


def _head(text: str, limit: int) -> str:
    """At most `limit` characters, cut between words: a token is shown whole (for the daemon's
    scrubber to find it) or not at all, never as a prefix."""
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    last = max(head.rfind(c) for c in " \t\r\n")     # the partial word after it goes
    return head[:last].rstrip() if last >= 0 else ""


async def fetch_json(session: aiohttp.ClientSession, node: Node, path: str,
                     timeout: aiohttp.ClientTimeout) -> Any:
    async with session.get(node.spec.base_url + path, timeout=timeout) as resp:
        body = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        if "json" not in ctype.lower():
            raise NotOllama(f"{path} answered HTTP {resp.status} {ctype or 'without a type'}")
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                              message=_head(body.decode(errors="replace"), 200))
        try:
            data = json.loads(body)
        except ValueError:
            raise NotOllama(f"{path} answered HTTP 200 that is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise NotOllama(f"{path} answered JSON without a models list")
        return data


def poll_error(path: str, exc: BaseException, connect_timeout: float) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"{path}: no connection within {connect_timeout:g} s"
    if isinstance(exc, TimeoutError):
        return f"{path}: no answer in time"
    if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
        return f"{path}: not a valid address: {exc}"
    return f"{path}: {str(exc) or type(exc).__name__}"


def listed_models(listing: Any) -> list[dict[str, Any]]:
    """The model entries of an /api/tags or /api/ps answer, ignoring anything malformed."""
    models = listing.get("models") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return []
    return [m for m in models if isinstance(m, dict)
            and isinstance(m.get("name") or m.get("model"), str)]


def model_name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("model"))


def model_names(listing: Any) -> frozenset[str]:
    return frozenset(normalize_model(model_name(m)) for m in listed_models(listing))


class Pollers:
    def __init__(self, fleet: Fleet, session: aiohttp.ClientSession, interval: float,
                 connect_timeout: float) -> None:
        self.fleet = fleet
        self.session = session
        self.use(interval, connect_timeout)
        self.tasks: dict[Node, asyncio.Task[None]] = {}
        # Last good answers per (node name, path) and when they came, for fleet-wide listings.
        self.cache: dict[tuple[str, str], Any] = {}
        self.fetched_at: dict[tuple[str, str], float] = {}
        self._live: dict[tuple[Node, str], asyncio.Task[Any]] = {}  # fetches under way

    def use(self, interval: float, connect_timeout: float) -> None:
        """New settings; a change restarts every node's loop so it applies now."""
        restart = (getattr(self, "interval", interval), getattr(self, "connect_timeout", connect_timeout)
                   ) != (interval, connect_timeout)
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.timeout = aiohttp.ClientTimeout(total=connect_timeout + 4.0,
                                             sock_connect=connect_timeout)
        if restart:
            for task in self.tasks.values():
                task.cancel()
            self.tasks.clear()
            self.sync()

    async def fetch(self, node: Node, path: str) -> Any:
        """GET a listing from one node and feed what it says into the fleet."""
        try:
            data = await fetch_json(self.session, node, path, self.timeout)
        except NotOllama as exc:
            self.fleet.update_poll(node, None, None, str(exc), foreign=True)
            return self.cache.get((node.name, path))
        except aiohttp.ClientResponseError as exc:  # Ollama's own error: it is there
            self.fleet.update_poll(node, None, None, None)
            log.warning("poll: %s %s answered HTTP %s: %s", node.name, path, exc.status,
                        exc.message)
            self.fleet.poll_failing(node, path, f"{path} answered HTTP {exc.status}: "
                                    f"{exc.message}" if exc.status >= 500 else None)
            return self.cache.get((node.name, path))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.fleet.update_poll(node, None, None,
                                   poll_error(path, exc, self.connect_timeout))
            return self.cache.get((node.name, path))
        self.fleet.poll_failing(node, path, None)
        if node.removed:
            return data
        self.cache[(node.name, path)] = data
        self.fetched_at[(node.name, path)] = time.monotonic()
        names = model_names(data)
        if path == "/api/tags":
            self.fleet.update_poll(node, names, None, None)
        elif path == "/api/ps":
            self.fleet.update_poll(node, None, names, None)
        return data

    def live(self, node: Node, path: str) -> asyncio.Task[Any]:
        """A fetch of `path` from `node`, shared with whoever else asks before it ends,
        so a dead node never has more than one fetch per path hanging on it."""
        key = (node, path)
        task = self._live.get(key)
        if task is None:
            task = asyncio.create_task(self.fetch(node, path), name=f"fetch {node.name}{path}")
            self._live[key] = task
            task.add_done_callback(lambda t: self._ended(key, t))
        return task

    def _ended(self, key: tuple[Node, str], task: asyncio.Task[Any]) -> None:
        if self._live.get(key) is task:
            del self._live[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("fetch of %s%s failed", key[0].name, key[1], exc_info=task.exception())

    def fresh(self, node: Node, path: str) -> bool:
        """The background poll answered recently (never, without a background interval)."""
        at = self.fetched_at.get((node.name, path))
        return self.interval > 0 and at is not None and time.monotonic() - at <= 2 * self.interval

    async def listings(self, path: str) -> list[Any]:
        """Every node's answer to `path`, for fleet-wide listings: recent poll results as they
        are; others fetched now, but waited for no longer than the connect timeout, so a dead
        or frozen node never delays the answer. A late node gives its last good answer (or
        None); its fetch goes on and fills the cache for the next listing."""
        nodes = list(self.fleet.nodes.values())
        stale = [self.live(n, path) for n in nodes if not self.fresh(n, path)]
        if stale:
            await asyncio.wait(stale, timeout=self.connect_timeout)
        return [self.cache.get((n.name, path)) for n in nodes]

    async def recheck(self, timeout: float) -> bool:
        """Ask every node the polls ruled out again now, waiting up to `timeout` s (for a
        request nothing else can serve); True when one of them is a candidate again. A node
        that still answers unlike Ollama (a web server's page) stays out, as the poll rules."""
        unfit = [n for n in self.fleet.nodes.values() if n.unfit is not None]
        if not unfit:
            return False
        await asyncio.wait([self.live(n, "/api/tags") for n in unfit], timeout=timeout)
        return any(n.unfit is None for n in unfit)

    def forget(self, name: str) -> None:
        """Drop what a removed node last said."""
        for key in [k for k in self.cache if k[0] == name]:
            del self.cache[key]
            self.fetched_at.pop(key, None)

    async def poll(self, node: Node) -> None:
        await asyncio.gather(self.fetch(node, "/api/tags"), self.fetch(node, "/api/ps"))

    async def poll_all(self) -> None:
        await asyncio.gather(*(self.poll(n) for n in list(self.fleet.nodes.values())))

    async def first_polls(self, timeout: float) -> None:
        """Poll every node once, for up to `timeout` s; a node that has not answered by then
        counts as unreachable (its loop keeps asking), so no request is routed to it blind."""
        tasks = {n: asyncio.create_task(self.poll(n)) for n in list(self.fleet.nodes.values())}
        if not tasks:
            return
        await asyncio.wait(tasks.values(), timeout=timeout)
        for node, task in tasks.items():
            if not task.done():
                task.cancel()
                self.fleet.update_poll(node, None, None,
                                       f"no answer to the first poll within {timeout:g} s")

    async def _loop(self, node: Node) -> None:
        """Poll every `interval` s; without one, poll once, and an unreachable or foreign
        node again every few seconds until it is well (its second chance comes from here)."""
        recheck = max(1.0, self.connect_timeout)
        if node.reachable is not None:  # polled just now (at start, or by a refresh)
            if self.interval <= 0 and node.unfit is None:
                return
            await asyncio.sleep(self.interval if self.interval > 0 else recheck)
        while not node.removed:
            try:
                await self.poll(node)
            except Exception:  # a poll must never end the loop
                log.exception("poll of %s failed", node.name)
            if self.interval <= 0 and node.unfit is None:
                return
            await asyncio.sleep(self.interval if self.interval > 0 else recheck)

    def sync(self) -> None:
        """Start loops for new nodes (and for unfit ones whose loop ended), stop loops of
        removed ones."""
        current = set(self.fleet.nodes.values())
        for node in list(self.tasks):
            if node not in current:
                self.tasks.pop(node).cancel()
        for node in current:
            task = self.tasks.get(node)
            if task is None or task.done() and node.unfit is not None:
                self.tasks[node] = asyncio.create_task(self._loop(node), name=f"poll {node.name}")

    async def stop(self) -> None:
        tasks = list(self.tasks.values()) + list(self._live.values())
        self.tasks.clear()
        self._live.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
