#!/usr/bin/env python3
"""Issue 12's restart race, reproduced: a harness signals the previous balancer and does not
wait for it, starts the next on the same port, waits until the port accepts a TCP connection,
then at once sends a chat to a node that freezes. Prints what each chat got (127.0.0.1 only).

    .venv/bin/python scripts/restart_race.py [--signal SIGKILL|SIGTERM] [--runs 9]

Why chats failed: the harness's probe is answered by the predecessor. A signal is delivered
asynchronously, and a SIGKILLed process keeps its listening socket (and accepts connections into
its backlog) until the kernel has torn it down, some milliseconds later. The probe succeeds
against that dying socket; the chat then lands in its backlog (reset when it closes) or finds no
socket at all (refused) before the new balancer, still starting Python, listens. Separately,
a balancer that routed before its first poll tried a node that froze meanwhile blind (the chat
ended in 404). Now the new one waits for a held port instead of failing, listens at once and
holds requests until its first polls are in (issue 24: a port kept shut during the polls
widened the refused window), and a SIGTERMed one closes its port before anything else. With
SIGTERM no chat fails; with SIGKILL a probe can still reach the dying process (one run of 12
restarts here: 8x 503 and 3x 502 from the frozen node, 1 reset): only a harness that waits for
the old process to exit, or for the port to be free, as the peer's harness does before it
starts a balancer, closes that window.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHAT = {"model": "codestral:22b", "messages": [{"role": "user", "content": "hi"}]}


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def one_chat(port: int) -> str:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.post(f"http://127.0.0.1:{port}/api/chat", json=CHAT) as r:
                await r.read()
                return str(r.status)
    except aiohttp.ClientConnectorError as exc:
        return "refused" if "refused" in str(exc).lower() or "failed" in str(exc) else repr(exc)
    except aiohttp.ClientOSError as exc:
        return "reset" if exc.errno == 104 else repr(exc)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return type(exc).__name__


async def main(sig: signal.Signals, runs: int) -> None:
    from simulator import Fault, Simulator

    async with Simulator() as sim:
        node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "balancer", "--server", f"{node.url}=gpu-1",
               "--timeout", "3", "--bind", f"127.0.0.1:{port}"]
        previous: asyncio.subprocess.Process | None = None
        outcomes: list[str] = []
        for _ in range(runs):
            node.clear_fault()
            if previous is not None:
                previous.send_signal(sig)  # not waited for, like the harness
            proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT,
                                                        stderr=asyncio.subprocess.DEVNULL)
            end = time.monotonic() + 15
            while not await asyncio.to_thread(accepts, port) and time.monotonic() < end:
                await asyncio.sleep(0.01)
            node.set_fault(Fault.FREEZE)
            outcomes.append(await one_chat(port))
            if previous is not None:
                await previous.wait()
            previous = proc
        node.clear_fault()
        if previous is not None:
            previous.send_signal(signal.SIGTERM)
            await previous.wait()
    print(f"{sig.name}, {runs} restarts: {dict(collections.Counter(outcomes))}  {outcomes}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signal", default="SIGKILL", choices=["SIGKILL", "SIGTERM"])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(main(signal.Signals[args.signal], args.runs))
