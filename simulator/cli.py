"""`python -m simulator` / `ollafleet simulate`: run simulated Ollama nodes for people."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Callable

from .catalogue import CATALOGUE
from .control import start_control
from .sim import Simulator
from .timing import Timing

TIMINGS: dict[str, Callable[[], Timing]] = {"fast": Timing, "realistic": Timing.realistic,
                                            "instant": Timing.instant}


def build_parser(prog: str = "python -m simulator") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Run simulated Ollama nodes on 127.0.0.1 (consecutive ports). They pull from a "
        "simulated registry (--list-models) at a real network's speed by default: 100 MB/s, "
        "so a 20 GB model such as qwq:32b takes over 3 minutes; --timing fast pulls in a "
        "second or two, and --time-scale speeds up everything."))
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=11501, help="first node port (default 11501; "
                   "0 = free ports)")
    p.add_argument("--models", default="", help="comma-separated models preinstalled on every "
                   "node, e.g. codestral:22b,qwq:32b")
    p.add_argument("--timing", choices=sorted(TIMINGS), default="realistic",
                   help="realistic (default): a 24 GB GPU, 8-12 s model loads, 30 tokens/s, pulls "
                   "at 100 MB/s; fast: pulls at 13 GB/s, 0.2 s loads, 200 tokens/s; instant: "
                   "nothing waits")
    p.add_argument("--version", default="0.13.5", help="Ollama version to report and imitate")
    p.add_argument("--time-scale", type=float, default=None, help="real seconds per modelled "
                   "second (0.01 runs 100x faster; reported durations stay modelled)")
    p.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL (per model)")
    p.add_argument("--multiuser-cache", action="store_true", help="OLLAMA_MULTIUSER_CACHE")
    p.add_argument("--control-port", type=int, default=None, help="control endpoint port "
                   "(default: the port after the last node; -1 disables)")
    p.add_argument("--reply-tokens", type=int, default=40, help="tokens per simulated answer")
    p.add_argument("--offline", action="store_true", help="the registry is unreachable")
    p.add_argument("--list-models", action="store_true",
                   help="print the models the simulated registry can pull, and exit")
    return p


def models_table() -> str:
    """The simulated registry's models, one line each (what --list-models prints)."""
    rows = [("model", "also as", "size", "parameters", "context", "capabilities")]
    for m in sorted({id(m): m for m in CATALOGUE.values()}.values(), key=lambda m: m.name):
        size = m.weights_size + m.projector_size
        shown = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
        rows.append((m.name, ", ".join(m.aliases) or "-", shown, m.parameter_size,
                     str(m.context_length), ", ".join(m.capabilities)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


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


def main(argv: list[str] | None = None, prog: str = "python -m simulator") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.list_models:
        print(models_table())
        return 0
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
