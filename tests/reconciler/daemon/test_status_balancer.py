"""`ollafleet status` shows what the balancer knows of each node: the model its GPU holds and
with which num_ctx, the requests queued for it, the rates learned from its answers, and why the
polls keep requests away from a node."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from rich.console import Console

from reconciler.daemon.run import Service
from reconciler.status_cli import fetch, healthy, print_status
from simulator import Simulator, Timing
from tests.cluster.conftest import free_port
from tests.reconciler.daemon.test_service import network, wait_until

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def status_cli(url: str) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "250"}   # one table row per line, so a row can be read whole
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "reconciler", "status", "--url", url, cwd=ROOT,
                                                env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def row(out: str, first: str) -> list[str]:
    """The cells of the first table row whose first cell is `first`, each cell's lines joined by "|"."""
    found: list[list[str]] = []
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if found and cells and cells[0] == "" and len(cells) == len(found[0]):
            found.append(cells)        # the same row's next line
        elif found:
            break
        elif cells and cells[0] == first:
            found.append(cells)
    if not found:
        raise AssertionError(f"no row {first!r} in:\n{out}")
    return ["|".join(filter(None, column)) for column in zip(*found)]


async def test_status_shows_the_runner_queue_learned_rates_and_why_a_node_gets_nothing(
        sim: Simulator, tmp_path: Path) -> None:
    # at 3 tokens/s the first answer holds gpu-1's only slot for seconds: the second one waits
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing(gen_tps=3))
    gone = SimpleNamespace(name="gpu-2", url=f"http://127.0.0.1:{free_port()}")   # nothing listens there
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node, gone], '[models."llama3.2:1b"]\n'))   # type: ignore[list-item]
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    assert svc.balancer is not None
    # streamed, as Open WebUI sends them (the final chunk's timings teach the rates)
    body = {"model": "llama3.2:1b", "stream": True, "options": {"num_ctx": 4096},
            "messages": [{"role": "user", "content": "hello"}]}
    try:
        async def polled() -> bool:
            return all(s.reachable is not None for s in svc.balancer.states())  # type: ignore[union-attr]
        await wait_until(polled)
        async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=60, trust_env=False) as client:
            first = asyncio.create_task(client.post("/api/chat", json=body))

            async def busy() -> bool:
                return any(s.in_flight for s in svc.balancer.states())  # type: ignore[union-attr]
            await wait_until(busy)
            second = asyncio.create_task(client.post("/api/chat", json=body))

            async def queued() -> bool:
                return any(s.queued for s in svc.balancer.states())  # type: ignore[union-attr]
            await wait_until(queued)
            # read at once, in this process: a subprocess could start after the first answer ended
            html = (await client.get(svc.status_url + "/")).text
            data = await fetch(svc.status_url)
            shown = io.StringIO()
            print_status(data, Console(file=shown, width=250))
            code, out = (0 if healthy(data) else 1), shown.getvalue()
            answers = await asyncio.gather(first, second)
        assert [r.status_code for r in answers] == [200, 200]

        gpu1, gpu2 = row(out, "gpu-1"), row(out, "gpu-2")
        head = row(out, "node")
        assert head[:4] == ["node", "state", "in flight", "queued"], head
        assert gpu1[head.index("queued")] == "1", out
        gpus = out[out.index("GPUs as the balancer knows them"):]
        assert row(gpus, "gpu-1")[1] == "llama3.2:1b|num_ctx 4096", out
        assert row(gpus, "gpu-2")[1:] == ["-", "-"], out
        assert "no requests: it is unreachable by the last poll" in gpu2[1], out
        assert code == 1   # gpu-2 cannot be reconciled: unhealthy, as before
        # the status page shows the same per node, as a card
        card = html[html.index('<div class="card node" data-node="gpu-1">'):]
        card = card[:card.index("</dl>")]
        assert "<dt>GPU holds</dt><dd><b>llama3.2:1b</b>, num_ctx 4096" in card, card
        assert "<dt>queued</dt><dd>1</dd>" in card, card
        assert "is unreachable by the last poll" in html[html.index('<div class="card node" data-node="gpu-2">'):]

        async def learned() -> bool:
            return any(s.learned for s in svc.balancer.states())  # type: ignore[union-attr]
        await wait_until(learned)
        _, out = await status_cli(svc.status_url)
        gpus = out[out.index("GPUs as the balancer knows them"):]
        learned = row(gpus, "gpu-1")[2]
        r = svc.balancer.states()[0].learned["llama3.2:1b"]
        assert learned == (f"llama3.2:1b: load {r['load_s']} s, prompt {r['prompt_tokens_per_s']} tokens/s, "
                           f"generation {r['tokens_per_s']} tokens/s, answers ~{r['answer_tokens']} tokens"), gpus
        assert 2.5 <= r["tokens_per_s"] <= 3.5, "learned from the simulated node's eval_count/eval_duration"
        assert row(out, "gpu-1")[head.index("queued")] == "0"
    finally:
        await svc.stop()
