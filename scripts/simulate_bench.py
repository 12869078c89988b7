#!/usr/bin/env python3
"""How fast the simulator itself is: start N nodes in one process, then hit them all.

Prints the start-up time, the time until every node answered /api/version, and how many
short chats per second the process serves with instant timing (client in the same process).
Usage: .venv/bin/python scripts/simulate_bench.py [--nodes 100] [--chats 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator import Simulator, Timing  # noqa: E402


async def main(nodes: int, chats: int) -> None:
    async with Simulator() as sim:
        t0 = time.perf_counter()
        fleet = await sim.add_nodes(nodes, timing=Timing.instant(), models=["codestral:22b"],
                                    reply_tokens=8)
        started = time.perf_counter() - t0
        async with aiohttp.ClientSession() as c:   # httpx's pool is O(n^2) at this scale

            async def fetch(method: str, url: str, **kw: object) -> bytes:
                async with c.request(method, url, **kw) as r:  # type: ignore[arg-type]
                    return await r.read()

            t1 = time.perf_counter()
            await asyncio.gather(*(fetch("GET", n.url + "/api/version") for n in fleet))
            answered = time.perf_counter() - t1
            body = {"model": "codestral:22b", "messages": [{"role": "user", "content": "hi"}],
                    "stream": False}
            t2 = time.perf_counter()
            await asyncio.gather(*(fetch("POST", fleet[i % nodes].url + "/api/chat", json=body)
                                   for i in range(chats)))
            chat_s = time.perf_counter() - t2
    print(f"{nodes} nodes started in {started:.2f} s; all answered /api/version in {answered:.2f} s")
    print(f"{chats} non-streaming chats in {chat_s:.2f} s = {chats / chat_s:.0f}/s "
          "(one process, one core for server and client)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--chats", type=int, default=500)
    a = p.parse_args()
    asyncio.run(main(a.nodes, a.chats))
