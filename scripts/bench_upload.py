#!/usr/bin/env python3
"""Upload throughput of an `ollama_dir` model to simulated nodes (127.0.0.1 only).

Writes a models folder with one model of SIZE MB of weights, then, in one run: the time to
verify its sha256 (done once per file), and `apply` to 3 empty simulated nodes with
reconcile.upload_concurrency = 1 and = 3 (total MB/s, per node MB/s, and the ratio). The nodes
run in a child process, so their CPU does not count against the reconciler.

    .venv/bin/python scripts/bench_upload.py [--size-mb 256] [--nodes 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def serve_nodes(count: int) -> None:
    from simulator import Simulator, Timing

    async with Simulator() as sim:
        nodes = [await sim.add_node(name=f"gpu-{i + 1}", timing=Timing.instant()) for i in range(count)]
        print(json.dumps([n.url for n in nodes]), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def spawn_nodes(count: int) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", str(count),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    return proc, json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))


async def stop(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        proc.kill()


class Quiet:
    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        pass

    def done(self, task: str, status: str = "") -> None:
        pass


async def apply_once(folder: Path, urls: list[str], concurrency: int) -> float:
    from reconciler.config import load_text
    from reconciler.plan import engine
    from reconciler.targets.ollama import node_targets

    text = f"version = 1\n[reconcile]\nupload_concurrency = {concurrency}\n"
    text += "".join(f'[[nodes]]\nname = "gpu-{i + 1}"\nurl = "{u}"\n' for i, u in enumerate(urls))
    text += f'[models."bench:1b"]\nollama_dir = "{folder}"\n'
    state = load_text(text, env={})
    targets = node_targets(state, timeout=30.0, stream_timeout=600.0)
    try:
        plan = await engine.plan(targets)
        started = time.perf_counter()
        report = await engine.apply(plan, targets, progress=Quiet())
        seconds = time.perf_counter() - started
    finally:
        for t in targets:
            await t.close()
    if report.failed:
        raise SystemExit(f"apply failed: {report.failed[0].message}")
    return seconds


async def main(size_mb: int, count: int) -> None:
    from reconciler.targets.ollama import folder as ollama_dir
    from simulator.modelsdir import write_model

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        folder = write_model(Path(tmp) / "models", "bench:1b", weights_size=size_mb << 20,
                             template="{{ .Prompt }}", params={"temperature": 0.5})
        size = sum(b.size for b in ollama_dir.read_folder(folder.root, "bench:1b").blobs)
        started = time.perf_counter()
        await ollama_dir.verify(ollama_dir.read_folder(folder.root, "bench:1b"))
        verify_s = time.perf_counter() - started
        print(f"upload throughput: one {size / 1e6:.0f} MB model from a models folder to {count} simulated nodes "
              "(nodes in another process, 127.0.0.1)")
        print(f"verify sha256 once: {verify_s:6.2f} s  {size / verify_s / 1e6:7.0f} MB/s")
        rates = {}
        for concurrency in (1, count):
            proc, urls = await spawn_nodes(count)
            try:
                seconds = await apply_once(folder.root, urls, concurrency)
            finally:
                await stop(proc)
            rates[concurrency] = count * size / seconds
            print(f"upload_concurrency={concurrency}: {seconds:6.2f} s  {rates[concurrency] / 1e6:7.0f} MB/s total, "
                  f"{rates[concurrency] / min(concurrency, count) / 1e6:6.0f} MB/s per node at once")
        print(f"ratio total throughput concurrency {count} / 1: {rates[count] / rates[1]:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve_nodes(int(sys.argv[2])))
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=256)
    p.add_argument("--nodes", type=int, default=3)
    a = p.parse_args()
    asyncio.run(main(a.size_mb, a.nodes))
