"""Simulator: many SimNodes in one asyncio loop."""

from __future__ import annotations

import asyncio
from typing import Any

from .catalogue import CATALOGUE, Catalogue
from .node import SimNode
from .server import build_app
from .timing import Timing


class Simulator:
    """Async container of simulated nodes: `async with Simulator() as sim: ...`."""

    def __init__(self, catalogue: Catalogue = CATALOGUE, registry_online: bool = True) -> None:
        self.catalogue = catalogue
        self.registry_online = registry_online
        self.nodes: dict[str, SimNode] = {}

    async def add_node(self, name: str | None = None, models: list[str] | tuple[str, ...] = (),
                       port: int = 0, timing: Timing | None = None, version: str = "0.13.5",
                       num_parallel: int = 1, **kwargs: Any) -> SimNode:
        """Start a node listening on 127.0.0.1:port (0 = a free port) with models installed.

        Extra keyword arguments: max_queue, max_loaded, vram, reply_tokens, keep_alive,
        context_length, multiuser_cache."""
        name = name or f"node-{len(self.nodes) + 1}"
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} already exists")
        node = SimNode(name, catalogue=self.catalogue, timing=timing, version=version,
                       num_parallel=num_parallel, registry_online=self.registry_online, **kwargs)
        for model in models:
            node._install(model, None, None, None, None)
        await node.start(build_app(node), port)
        self.nodes[name] = node
        return node

    async def add_nodes(self, count: int, *, prefix: str = "gpu-", start_port: int = 0,
                        **kwargs: Any) -> list[SimNode]:
        """Start `count` nodes concurrently (consecutive ports from start_port if non-zero)."""
        first = len(self.nodes) + 1
        coros = [self.add_node(name=f"{prefix}{first + i}",
                               port=start_port + i if start_port else 0, **kwargs)
                 for i in range(count)]
        return list(await asyncio.gather(*coros))

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    async def remove_node(self, node: SimNode | str) -> None:
        n = self.nodes.pop(node if isinstance(node, str) else node.name)
        await n.stop()

    async def close(self) -> None:
        nodes = list(self.nodes.values())
        self.nodes.clear()
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
