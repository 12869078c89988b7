"""Simulated Ollama nodes and balancers on 127.0.0.1, with short timeouts."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from balancer import Balancer, NodeSpec, Settings

FAST = Settings(silence_timeout=1.0, connect_timeout=0.5, queue_timeout=0.0, poll_interval=0.0)
CHAT = {"model": "codestral:22b", "messages": [{"role": "user", "content": "Write hello world"}]}

MakeBalancer = Callable[..., Awaitable[Balancer]]


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from simulator import Simulator

    async with Simulator() as s:
        yield s


@pytest.fixture
async def make_balancer() -> AsyncIterator[MakeBalancer]:
    started: list[Balancer] = []

    async def make(nodes: list[Any], **settings: Any) -> Balancer:
        specs = [n if isinstance(n, NodeSpec) else NodeSpec(n.name, n.url) for n in nodes]
        fields = {**FAST.__dict__, **settings}
        b = Balancer(Settings(**fields), specs)
        await b.start("127.0.0.1", 0)
        started.append(b)
        return b

    yield make
    for b in started:
        await b.stop(drain_timeout=1.0)


@pytest.fixture
def switched_off() -> Iterator[str]:
    """URL of a port that never completes a TCP handshake, like a switched-off PC: its listen
    backlog is full, so the kernel drops further SYNs and connecting times out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for c in fillers:
            c.close()
        srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


def state(b: Balancer, name: str) -> Any:
    return next(s for s in b.states() if s.name == name)


async def chat_lines(http: aiohttp.ClientSession, b: Balancer, body: dict[str, Any] | None = None
                     ) -> tuple[int, list[dict[str, Any]], str | None]:
    """POST /api/chat; (status, parsed lines, error text if the stream broke)."""
    lines: list[dict[str, Any]] = []
    async with http.post(b.url + "/api/chat", json=body or CHAT) as r:
        try:
            async for raw in r.content:
                if raw.strip():
                    lines.append(json.loads(raw))
        except aiohttp.ClientPayloadError as exc:
            return r.status, lines, str(exc) or "payload error"
        return r.status, lines, None


async def until(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := cond()):
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return value
