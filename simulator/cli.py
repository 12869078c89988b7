"""`python -m simulator` / `ollafleet simulate`: run simulated Ollama nodes for people."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Callable

from .control import start_control
from .sim import Simulator
from .timing import Timing

TIMINGS: dict[str, Callable[[], Timing]] = {"fast": Timing, "realistic": Timing.realistic,
                                            "instant": Timing.instant}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulate", description="Run simulated Ollama nodes on "
                                "127.0.0.1 (consecutive ports).")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=11501, help="first node port (default 11501; "
                   "0 = free ports)")
    p.add_argument("--models", default="", help="comma-separated models preinstalled on every "
                   "node, e.g. codestral:22b,qwq:32b")
    p.add_argument("--timing", choices=sorted(TIMINGS), default="realistic")
    p.add_argument("--version", default="0.13.5", help="Ollama version to report and imitate")
    p.add_argument("--time-scale", type=float, default=None, help="real seconds per modelled "
                   "second (0.01 runs 100x faster; reported durations stay modelled)")
    p.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL (per model)")
    p.add_argument("--multiuser-cache", action="store_true", help="OLLAMA_MULTIUSER_CACHE")
    p.add_argument("--control-port", type=int, default=None, help="control endpoint port "
                   "(default: the port after the last node; -1 disables)")
    p.add_argument("--reply-tokens", type=int, default=40, help="tokens per simulated answer")
    p.add_argument("--offline", action="store_true", help="the registry is unreachable")
    return p


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    stop = stop or asyncio.Event()
    timing = TIMINGS[args.timing]()
    if args.time_scale is not None:
        timing = timing.scaled(args.time_scale)
    async with Simulator(registry_online=not args.offline) as sim:
        for i in range(args.nodes):
            port = args.port + i if args.port else 0
            node = await sim.add_node(name=f"sim-{i + 1}", models=models, port=port,
                                      timing=timing, version=args.version,
                                      num_parallel=args.num_parallel,
                                      multiuser_cache=args.multiuser_cache,
                                      reply_tokens=args.reply_tokens)
            print(f"{node.name}  {node.url}", flush=True)
        control = None
        cport = args.control_port
        if cport is None:
            cport = args.port + args.nodes if args.port else 0
        if cport >= 0:
            control = await start_control(sim, cport)
            addr = control.addresses[0]
            print(f"control  http://127.0.0.1:{addr[1]}/nodes  (POST /nodes/NAME/fault "
                  '{"fault":"refuse"}, DELETE to clear)', flush=True)
        print("Ctrl-C stops.", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await stop.wait()
        finally:
            if control is not None:
                await control.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
