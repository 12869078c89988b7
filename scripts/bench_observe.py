#!/usr/bin/env python3
"""Observe 1 simulated node, then N at once, in one process; print the time ratio.

Observing is concurrent across nodes, so N nodes should cost far less than N × one node.
Usage: .venv/bin/python scripts/bench_observe.py [--nodes 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.config import load_text  # noqa: E402
from reconciler.plan import engine  # noqa: E402
from reconciler.targets.ollama import node_targets  # noqa: E402
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


async def observe_seconds(urls: list[str], rounds: int) -> float:
    """Median wall time of one observe of every node in `urls` (clients already connected)."""
    targets = node_targets(state_for(urls))
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
    a = parser.parse_args()
    async with Simulator() as sim:
        nodes = await sim.add_nodes(a.nodes, timing=Timing.instant())
        for node in nodes:
            node.install("codestral:22b")
            node.install("qwq:32b")
            node.install("codestral-30k", from_="codestral:22b", parameters={"num_ctx": 30000, "temperature": 0.1})
        urls = [n.url for n in nodes]
        one = await observe_seconds(urls[:1], a.rounds)
        many = await observe_seconds(urls, a.rounds)
    print(f"observe 1 node:   {one * 1000:8.1f} ms (median of {a.rounds})")
    print(f"observe {a.nodes} nodes: {many * 1000:8.1f} ms")
    print(f"ratio: {many / one:.1f}x for {a.nodes}x the nodes "
          f"(sequential would be ~{a.nodes}x; simulator and client share this process and its CPU)")


if __name__ == "__main__":
    asyncio.run(main())
