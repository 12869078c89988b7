"""Command line compatible with ollama_load_balancer:

    python -m balancer --server "http://HOST:PORT=NAME" ... [--timeout N] [--bind HOST:PORT]

Its defaults are the peer's where a swapped-in binary would notice: it listens on every
interface, port 11434 (Open WebUI on another PC reaches it as before).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO, TypeVar

from . import __version__
from .config import NodeSpec, Settings
from .logline import LineFormatter
from .server import Balancer

T = TypeVar("T")


def parse_server(text: str) -> NodeSpec:
    """'http://host:port=Name' -> NodeSpec; split at the first '=' after the scheme."""
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    eq = text.find("=", start)
    if eq < 0:
        raise argparse.ArgumentTypeError(f"expected URL=NAME, got {text!r}")
    url, name = text[:eq], text[eq + 1:]
    if not url or not name:
        raise argparse.ArgumentTypeError(f"expected URL=NAME, got {text!r}")
    return NodeSpec(name=name, url=url)


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m balancer",
        description="Model-aware load balancer for Ollama nodes (drop-in for ollama_load_balancer).")
    p.add_argument("--server", action="append", type=parse_server, required=True,
                   metavar="URL=NAME", help="an Ollama node, e.g. http://10.0.0.5:11434=gpu-1 "
                   "(repeat for each node; order = preference)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="N",
                   help="seconds of upstream silence before a node is abandoned (0 disables; "
                   "default 120, the 2 minutes of ollama_load_balancer's roadmap; its 1.0.3 used 30)")
    p.add_argument("--bind", type=parse_bind, default=("0.0.0.0", 11434), metavar="HOST:PORT",
                   help="listen address (default 0.0.0.0:11434: every interface, as "
                   "ollama_load_balancer; 127.0.0.1:11434 for this PC only)")
    p.add_argument("--queue-timeout", type=float, default=0.0, metavar="N",
                   help="queue requests in the balancer for up to N s and send each to the "
                   "node whose first token comes soonest (default 0: 503 at once when every "
                   "node is busy, as ollama_load_balancer does)")
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="N",
                   help="close a client connection with no request, or half a header, after N s")
    p.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="open client connections at most (default 0: from the open-files limit)")
    p.add_argument("--max-body-mb", type=int, default=64, metavar="N",
                   help="largest request body read to route it, in MiB (default 64)")
    p.add_argument("--time-scale", type=positive, default=1.0, metavar="S",
                   help="for replays only: the nodes run S times faster than the durations they "
                   "report (a simulator's time scale, e.g. 0.1); default 1 (real Ollama)")
    p.add_argument("--allow-management", action="store_true",
                   help="pass /api/pull, /api/create, /api/delete, ... through instead of 403")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(silence_timeout=args.timeout, queue_timeout=args.queue_timeout,
                    refuse_management=not args.allow_management, idle_timeout=args.idle_timeout,
                    max_connections=args.max_connections, max_body=args.max_body_mb * 2**20,
                    time_scale=args.time_scale)


async def serve(args: argparse.Namespace) -> None:
    names = [s.name for s in args.server]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: duplicate server names in {names}")
    balancer = Balancer(settings_from(args), args.server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await balancer.start(*args.bind)
    await stop.wait()
    logging.getLogger("balancer").info("shutting down: finishing open streams")
    await balancer.stop()


def setup_logging(stream: TextIO) -> None:
    """Timestamped INFO lines. Two lines per request: skip the record fields the format
    never shows (the logging HOWTO's optimisations), about 2 us less per line."""
    logging._srcfile = None  # no caller lookup: the format has no file/line/function
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed (not on Windows): a third less CPU per
    relayed chunk."""
    try:
        uvloop = importlib.import_module("uvloop")  # no static import: absent on Windows
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(sys.stderr)
    try:
        run(serve(args))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
