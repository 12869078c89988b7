"""Background polls of each node's /api/tags and /api/ps, feeding fleet.py.

Polls only add knowledge (which models a node has, which are loaded); runtime
failures stay the authority on a node's reliability.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp

from .classify import normalize_model
from .fleet import Fleet, Node

log = logging.getLogger("balancer")


async def fetch_json(session: aiohttp.ClientSession, node: Node, path: str,
                     timeout: aiohttp.ClientTimeout) -> Any:
    async with session.get(node.spec.base_url + path, timeout=timeout) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                              message=body[:200].decode(errors="replace"))
        return json.loads(body)


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
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=connect_timeout + 4.0,
                                             sock_connect=connect_timeout)
        self.tasks: dict[Node, asyncio.Task[None]] = {}
        # Last good answers per node, for fleet-wide listings when a node is down.
        self.cache: dict[tuple[str, str], Any] = {}

    async def fetch(self, node: Node, path: str) -> Any:
        """GET a listing from one node and feed what it says into the fleet."""
        try:
            data = await fetch_json(self.session, node, path, self.timeout)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.fleet.update_poll(node, None, None, f"{path}: {str(exc) or type(exc).__name__}")
            return self.cache.get((node.name, path))
        if node.removed:
            return data
        self.cache[(node.name, path)] = data
        names = model_names(data)
        if path == "/api/tags":
            self.fleet.update_poll(node, names, None, None)
        elif path == "/api/ps":
            self.fleet.update_poll(node, None, names, None)
        return data

    async def poll(self, node: Node) -> None:
        await asyncio.gather(self.fetch(node, "/api/tags"), self.fetch(node, "/api/ps"))

    async def poll_all(self) -> None:
        await asyncio.gather(*(self.poll(n) for n in list(self.fleet.nodes.values())))

    async def _loop(self, node: Node) -> None:
        while not node.removed:
            try:
                await self.poll(node)
            except Exception:  # a poll must never end the loop
                log.exception("poll of %s failed", node.name)
            await asyncio.sleep(self.interval)

    def sync(self) -> None:
        """Start loops for new nodes, stop loops of removed ones."""
        current = set(self.fleet.nodes.values())
        for node in list(self.tasks):
            if node not in current:
                self.tasks.pop(node).cancel()
        for node in current:
            if node not in self.tasks:
                # without a background interval a new node is still polled once
                job = self._loop(node) if self.interval > 0 else self.poll(node)
                self.tasks[node] = asyncio.create_task(job, name=f"poll {node.name}")

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
