#!/usr/bin/env python3
"""Observe 1 simulated node, then N at once, in one process; print the time ratio.

Observing is concurrent across nodes, so N nodes should cost far less than N × one node.
Two runs: nodes that answer instantly (then only CPU is measured: the simulator and the
client share this process), and nodes that take --latency-ms per answer, as a real node on a
LAN does (network + Ollama reading its manifests and GGUF headers), added on the client side.
Usage: .venv/bin/python scripts/bench_observe.py [--nodes 100] [--rounds 5] [--latency-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.config import load_text  # noqa: E402
from reconciler.plan import engine  # noqa: E402
from reconciler.targets.ollama import OllamaNode  # noqa: E402
from reconciler.targets.ollama.client import tls_context  # noqa: E402
from reconciler.targets.ollama.diff import wanted_for  # noqa: E402
from simulator import Simulator, Timing  # noqa: E402

MODELS = """
[models."codestral:22b"]
keep_loaded = true
[models."qwq:32b"]
[models."codestral-30k"]
from = "codestral:22b"
parameters = { num_ctx = 30000, temperature = 0.1 }
"""


def state_for(urls: list[str]):  # type: ignore[no-untyped-def]
    text = "version = 1\n" + "".join(f'[[nodes]]\nname = "n{i}"\nurl = "{u}"\n' for i, u in enumerate(urls))
    return load_text(text + MODELS, env={})


class Delayed(httpx.AsyncBaseTransport):
    """Every answer arrives `delay` seconds late, without using CPU meanwhile."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = httpx.AsyncHTTPTransport(verify=tls_context())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def observe_seconds(urls: list[str], rounds: int, delay: float) -> float:
    """Median wall time of one observe of every node in `urls` (clients already connected)."""
    state = state_for(urls)
    targets = [OllamaNode(wanted_for(state, n), n.url, transport=Delayed(delay)) for n in state.nodes]
    try:
        await engine.observe_all(targets)          # warm up: connections, imports
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            seen = await engine.observe_all(targets)
            times.append(time.perf_counter() - t0)
            errors = [o.error for o in seen if o.error]
            if errors:
                raise SystemExit(f"observe failed: {errors[0]}")
        return statistics.median(times)
    finally:
        await asyncio.gather(*(t.close() for t in targets))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    a = parser.parse_args()
    async with Simulator() as sim:
        nodes = await sim.add_nodes(a.nodes, timing=Timing.instant())
        for node in nodes:
            node.install("codestral:22b")
            node.install("qwq:32b")
            node.install("codestral-30k", from_="codestral:22b", parameters={"num_ctx": 30000, "temperature": 0.1})
        urls = [n.url for n in nodes]
        for label, delay in (("instant answers", 0.0), (f"{a.latency_ms:g} ms per answer", a.latency_ms / 1000)):
            one = await observe_seconds(urls[:1], a.rounds, delay)
            many = await observe_seconds(urls, a.rounds, delay)
            print(f"{label}: 1 node {one * 1000:.1f} ms, {a.nodes} nodes {many * 1000:.1f} ms "
                  f"(median of {a.rounds}): ratio {many / one:.1f}x for {a.nodes}x the nodes")
    print("(sequential observing would be ~{0}x; with instant answers only CPU is measured, and the simulated\n"
          " nodes and the client share this one process and its CPU)".format(a.nodes))

if __name__ == "__main__":
    asyncio.run(main())
