from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from simulator import SimNode, Simulator, Timing


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


@pytest.fixture
async def node(sim: Simulator) -> SimNode:
    """A node with nothing sleeping (reported durations are still modelled)."""
    return await sim.add_node(name="gpu-1", models=["codestral:22b"], timing=Timing.instant())


@pytest.fixture
async def client(node: SimNode) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        yield c


def lines(body: bytes) -> list[bytes]:
    """NDJSON lines; asserts every line ends with exactly one newline."""
    assert body.endswith(b"\n") and not body.endswith(b"\n\n")
    return body[:-1].split(b"\n")
