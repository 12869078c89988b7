#!/usr/bin/env python3
"""Balancer overhead against connecting directly, on simulated nodes (127.0.0.1 only).

One run prints, for 1, 16 and 64 concurrent /api/chat streams: time to first token
(direct, through the balancer, added p50/p99), the total-time ratio, and the balancer
process's CPU time per relayed chunk. The simulated nodes and the balancer each run in
their own process, so the client's and the nodes' CPU don't count against the balancer.

The model's parameters are those the repo's desired_state.toml declares for codestral:22b,
as deployed: the client sends its Open WebUI params (as Open WebUI does), the balancer fills
the rest (keep_alive -1 for a keep_loaded model), so every body is decoded and re-encoded.
`--no-params`: a balancer with no declared parameters, bodies relayed as they come.

    .venv/bin/python scripts/bench_balancer.py [--quick] [--no-params]
        [--nodes 64 --slots 1 --queue-timeout 60]   (64 streams over 64 nodes, cost-based)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# parallel slots per simulated node (4 x 16 = 64 streams at once); `--nodes 64 --slots 1`: the
# 64 x 64 case (the child processes read them from the environment)
NODES = int(os.environ.get("BENCH_NODES", "4"))
SLOTS = int(os.environ.get("BENCH_SLOTS", "16"))
MODEL = "codestral:22b"
TOKENS = 32
TOKENS_PER_S = 100.0
CLK = os.sysconf("SC_CLK_TCK")
STATE = ROOT / "desired_state.toml"
SENT: dict[str, object] = {}  # the model's Open WebUI params, sent with every request


def declared() -> tuple[dict[str, Any], dict[str, Any]]:
    """desired_state.toml's view of MODEL: (what Open WebUI sends, the balancer's params)."""
    from reconciler.config import load
    from reconciler.daemon.wiring import model_params

    state = load(STATE, skip_env=True)
    ui = state.models[MODEL].openwebui
    return (dict(ui.params) if ui is not None else {}), dict(model_params(state))


# -- child processes ----------------------------------------------------------------
async def serve_nodes() -> None:
    from simulator import Simulator, Timing

    # instant-ish: no load or prompt time; 100 tokens/s per stream, about 3x a 32B model on
    # one 24 GB GPU, so 64 streams relay ~6400 chunks/s
    timing = Timing(load_delay=0.0, warm_load=0.0, prompt_tps=1e9, gen_tps=TOKENS_PER_S)
    async with Simulator() as sim:
        nodes = [await sim.add_node(name=f"n{i}", models=[MODEL], timing=timing,
                                    num_parallel=SLOTS) for i in range(NODES)]
        print(json.dumps([n.url for n in nodes]), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_balancer(urls: list[str]) -> None:
    from balancer import Balancer, NodeSpec, Settings

    if os.environ.get("BENCH_LOG"):  # log as the CLI does (INFO), into this file
        from balancer.cli import setup_logging
        setup_logging(open(os.environ["BENCH_LOG"], "a"))

    params = {} if os.environ.get("BENCH_NO_PARAMS") else declared()[1]
    queue = float(os.environ.get("BENCH_QUEUE", "0"))  # --queue-timeout: the cost-based path
    b = Balancer(Settings(poll_interval=0.0, model_params=params, queue_timeout=queue),
                 [NodeSpec(f"n{i}", u, max_concurrent=SLOTS) for i, u in enumerate(urls)])
    await b.start("127.0.0.1", 0)
    profile_to = os.environ.get("BENCH_PROFILE")  # a path: write a cProfile of the balancer
    if profile_to:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    print(json.dumps(b.url), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if profile_to:
        prof.disable()
        prof.dump_stats(profile_to)
    await b.stop(drain_timeout=1.0)


# -- driver ---------------------------------------------------------------------------
async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, json.loads(line)


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns precision where schedstat exists."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0])
                   for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


async def one_stream(http: aiohttp.ClientSession, url: str, tokens: int = TOKENS
                     ) -> tuple[float, float, int]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "bench"}],
            "options": {**SENT, "num_predict": tokens}}
    t0 = time.perf_counter()
    ttft = 0.0
    chunks = 0
    async with http.post(url + "/api/chat", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if chunks == 0:
                ttft = time.perf_counter() - t0
            chunks += 1
        assert b'"done":true' in line
    return ttft, time.perf_counter() - t0, chunks


async def run_level(http: aiohttp.ClientSession, urls: list[str], conc: int, per_worker: int,
                    burst: bool, tokens: int = TOKENS) -> tuple[list[float], list[float], int]:
    """`conc` clients each run `per_worker` streams back to back (a closed loop, like a
    load tester's -c N). Steady state drops each client's first stream (they all start at
    once); `burst` keeps only those first streams, started together."""
    ttfts: list[float] = []
    totals: list[float] = []
    chunks = 0

    async def worker(i: int) -> None:
        nonlocal chunks
        for k in range(per_worker):
            ttft, total, n = await one_stream(http, urls[i % len(urls)], tokens)
            chunks += n
            if (k == 0) == burst:
                ttfts.append(ttft)
                totals.append(total)

    await asyncio.gather(*(worker(i) for i in range(conc)))
    return ttfts, totals, chunks


async def cpu_split(http: aiohttp.ClientSession, bal_url: str, pid: int, quick: bool) -> None:
    """CPU per request and per chunk, separated: 64 clients run 1-token streams (almost
    all per-request cost), then TOKENS-token streams; the difference is per-chunk cost."""
    per_worker = 4 if quick else 10
    cpu0 = cpu_seconds(pid)
    _, _, short_chunks = await run_level(http, [bal_url], 64, per_worker, False, tokens=1)
    cpu1 = cpu_seconds(pid)
    _, _, long_chunks = await run_level(http, [bal_url], 64, per_worker, False)
    cpu2 = cpu_seconds(pid)
    streams = 64 * per_worker
    per_chunk = ((cpu2 - cpu1) - (cpu1 - cpu0)) / (long_chunks - short_chunks)
    per_request = (cpu1 - cpu0) / streams - per_chunk * short_chunks / streams
    per_stream = (cpu2 - cpu1) / streams  # the least noisy of the three
    print(f"balancer CPU at 64 streams: {per_request * 1e6:.0f} us per request, "
          f"{per_chunk * 1e6:.1f} us per chunk, {per_stream * 1e6:.0f} us per "
          f"{long_chunks // streams}-chunk stream ({streams} requests each way)")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(quick: bool, cpu_rounds: int = 0) -> None:
    nodes_proc, urls = await spawn("--serve-nodes")
    bal_proc, bal_url = await spawn("--serve-balancer", *urls)  # type: ignore[misc]
    if cpu_rounds:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                await run_level(http, [bal_url], 16, 2, False)  # warm up
                for _ in range(cpu_rounds):
                    await cpu_split(http, bal_url, bal_proc.pid, quick)
        finally:
            await stop(bal_proc, nodes_proc)
        return
    # (label, concurrent clients, streams per client, repeats, burst)
    plan = [("1", 1, 15 if quick else 40, 1, False),
            ("16", 16, 3 if quick else 6, 1 if quick else 3, False),
            ("64", 64, 3 if quick else 6, 1 if quick else 3, False),
            ("64 burst", 64, 1, 3 if quick else 10, True)]
    conn = aiohttp.TCPConnector(limit=0)
    print(f"balancer overhead: {NODES} simulated nodes x {SLOTS} slots, {TOKENS} tokens/stream, "
          f"{TOKENS_PER_S:g} tokens/s, 127.0.0.1; each row: direct, then through the balancer")
    print(f"{'streams':>8} {'direct p50':>10} {'p99':>8} {'balanced p50':>12} {'p99':>8} "
          f"{'added p50':>9} {'added p99':>9} {'total ratio':>11} {'cpu/chunk':>9}")
    try:
        async with aiohttp.ClientSession(connector=conn) as http:
            await run_level(http, urls, 16, 2, False)  # warm up both paths
            await run_level(http, [bal_url], 16, 2, False)
            # every node runs the model once through the balancer, which then knows it is
            # loaded everywhere (a cost-based balancer would rather wait for a node it knows
            # has the model than load it on another: the bench would measure that, not the relay)
            await run_level(http, [bal_url], NODES * SLOTS, 1, True)
            for label, conc, per_worker, repeats, burst in plan:
                d_ttft: list[float] = []
                b_ttft: list[float] = []
                d_total: list[float] = []
                b_total: list[float] = []
                cpu = 0.0
                chunks = 0
                for _ in range(repeats):
                    t, tot, _n = await run_level(http, urls, conc, per_worker, burst)
                    d_ttft += t
                    d_total += tot
                    cpu0 = cpu_seconds(bal_proc.pid)
                    t, tot, n = await run_level(http, [bal_url], conc, per_worker, burst)
                    cpu += cpu_seconds(bal_proc.pid) - cpu0
                    chunks += n
                    b_ttft += t
                    b_total += tot
                ms = 1000.0
                print(f"{label:>8} {pct(d_ttft, .5) * ms:>8.2f}ms {pct(d_ttft, .99) * ms:>6.2f}ms "
                      f"{pct(b_ttft, .5) * ms:>10.2f}ms {pct(b_ttft, .99) * ms:>6.2f}ms "
                      f"{(pct(b_ttft, .5) - pct(d_ttft, .5)) * ms:>7.2f}ms "
                      f"{(pct(b_ttft, .99) - pct(d_ttft, .99)) * ms:>7.2f}ms "
                      f"{statistics.mean(b_total) / statistics.mean(d_total):>10.3f}x "
                      f"{cpu / chunks * 1e6:>7.1f}us")
                per_chunk = cpu / chunks
            print(f"balancer CPU per relayed chunk {per_chunk * 1e6:.0f} us: one core relays about "
                  f"{1 / per_chunk:,.0f} chunks/s ({1 / per_chunk / 30:,.0f} streams at 30 tokens/s)")
            await cpu_split(http, bal_url, bal_proc.pid, quick)
    finally:
        await stop(bal_proc, nodes_proc)


async def stop(*procs: asyncio.subprocess.Process) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--cpu", type=int, default=0, metavar="N",
                        help="only measure CPU per request and per chunk, N times")
    parser.add_argument("--no-params", action="store_true",
                        help="no declared model parameters (client and balancer)")
    parser.add_argument("--nodes", type=int, default=NODES, help="simulated nodes (default 4)")
    parser.add_argument("--slots", type=int, default=SLOTS, help="slots per node (default 16)")
    parser.add_argument("--queue-timeout", type=float, default=0.0, metavar="N",
                        help="the balancer queues (cost-based choice) for up to N s")
    parser.add_argument("--serve-nodes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-balancer", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_nodes:
        asyncio.run(serve_nodes())
    elif args.serve_balancer:
        if os.environ.get("BENCH_NO_UVLOOP"):
            asyncio.run(serve_balancer(args.serve_balancer))
        else:
            from balancer.cli import run  # as `python -m balancer` runs: uvloop if installed
            run(serve_balancer(args.serve_balancer))
    else:
        os.environ["BENCH_NODES"], os.environ["BENCH_SLOTS"] = str(args.nodes), str(args.slots)
        os.environ["BENCH_QUEUE"] = str(args.queue_timeout)
        NODES, SLOTS = args.nodes, args.slots
        if args.no_params:
            os.environ["BENCH_NO_PARAMS"] = "1"  # the balancer process inherits it
        else:
            SENT.update(declared()[0])
        print("model parameters: " + ("none" if args.no_params else
              f"{MODEL} {SENT} from desired_state.toml; the balancer fills the rest"))
        asyncio.run(asyncio.wait_for(main(args.quick, args.cpu), 300))
