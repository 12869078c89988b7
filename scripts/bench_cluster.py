#!/usr/bin/env python3
"""Added latency of [cluster]'s shared state per request, on simulated nodes (127.0.0.1 only).

One run starts its own redis-server on a free port, simulated nodes that answer at once, and
two balancers on them: one alone (no [cluster]) and one sharing slots and caches through Redis.
It sends the same short /api/chat requests through both, alternating in rounds so machine load
hits both modes alike, 1 and 8 at a time, and prints the latency per mode (p50, p95), the added
milliseconds and the ratio. Needs Debian's redis-server on PATH.

    .venv/bin/python scripts/bench_cluster.py [--requests 400]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "llama3.2:1b"
ROUNDS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


async def timed(client: httpx.AsyncClient, url: str, i: int) -> float:
    t0 = time.perf_counter()
    r = await client.post(url + "/api/chat", json={
        "model": MODEL, "stream": False,
        "messages": [{"role": "user", "content": f"q{i}"}]})
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0


async def run(requests: int) -> None:
    from balancer import Balancer, NodeSpec, Settings
    from balancer.shared import Shared
    from simulator import Simulator, Timing

    import redis.asyncio as aioredis

    with tempfile.TemporaryDirectory() as folder:
        proc, port = start_redis(folder)
        try:
            timing = Timing(load_delay=0.0, warm_load=0.0, prompt_tps=1e9, gen_tps=1e6)
            async with Simulator() as sim:
                nodes = [await sim.add_node(f"n{i}", models=[MODEL], timing=timing,
                                            num_parallel=8, reply_tokens=1) for i in range(2)]
                specs = [NodeSpec(n.name, n.url, max_concurrent=8) for n in nodes]
                settings = Settings(poll_interval=0.0)
                plain, shared = Balancer(settings, specs), Balancer(settings, specs)
                client_redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0",
                                                      socket_timeout=0.5)
                shared.fleet.shared = Shared(client_redis, "bench", shared.fleet)
                shared.fleet.shared.start()
                await plain.start()
                await shared.start()
                print(f"{requests} requests per mode and concurrency, {ROUNDS} alternating rounds; "
                      "nodes answer at once, so the figures are the balancer's own cost")
                print(f"{'concurrent':>10} {'mode':>8} {'p50 ms':>8} {'p95 ms':>8}")
                async with httpx.AsyncClient(timeout=30) as client:
                    for b in (plain, shared):  # warm: connections, runners
                        await asyncio.gather(*(timed(client, b.url, i) for i in range(16)))
                    for conc in (1, 8):
                        times: dict[str, list[float]] = {"alone": [], "cluster": []}
                        per_round = max(conc, requests // ROUNDS)
                        for _ in range(ROUNDS):
                            for mode, b in (("alone", plain), ("cluster", shared)):
                                sem = asyncio.Semaphore(conc)

                                async def one(i: int, url: str = b.url) -> float:
                                    async with sem:
                                        return await timed(client, url, i)
                                times[mode] += await asyncio.gather(
                                    *(one(i) for i in range(per_round)))
                        p = {m: (statistics.median(t) * 1000,
                                 statistics.quantiles(t, n=20)[18] * 1000)
                             for m, t in times.items()}
                        for m in ("alone", "cluster"):
                            print(f"{conc:>10} {m:>8} {p[m][0]:>8.2f} {p[m][1]:>8.2f}")
                        print(f"{conc:>10} {'added':>8} {p['cluster'][0] - p['alone'][0]:>8.2f} "
                              f"{p['cluster'][1] - p['alone'][1]:>8.2f}   "
                              f"(p50 ratio {p['cluster'][0] / p['alone'][0]:.2f}x)")
                await plain.stop(1)
                await shared.fleet.shared.close()
                await shared.stop(1)
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
