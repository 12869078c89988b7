"""The simulated scheduler follows Ollama's (reference/ollama-api.md §7, "The scheduler, as
Ollama's source has it"): eviction of a model that does not fit, per-runner parallelism, the
unbounded queue of a loaded runner and the bounded queue of loads."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from simulator import Simulator, Timing
from simulator.faults import BUSY_ERROR

GiB = 1024**3


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": False,
            **extra}


async def ps(c: httpx.AsyncClient) -> dict[str, str]:
    """name → expires_at of each loaded runner."""
    return {m["name"]: m["expires_at"] for m in (await c.get("/api/ps")).json()["models"]}


async def test_a_second_big_model_waits_for_the_first_ones_requests_then_evicts_it(
        sim: Simulator) -> None:
    """§7 "A second model that does not fit": the victim's keep-alive is destroyed, its
    in-flight requests (also one that attaches meanwhile) finish first, then the new model
    loads, and its load_duration covers that wait."""
    node = await sim.add_node(models=["codestral:22b", "qwq:32b"], reply_tokens=25,
                              timing=Timing(load_delay=0.2, gen_tps=50))   # 0.5 s per answer
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        await c.post("/api/generate", json={"model": "codestral:22b", "keep_alive": -1})
        assert int((await ps(c))["codestral:22b"][:4]) > 2200                   # pinned
        first = asyncio.create_task(c.post("/api/chat", json=chat("codestral:22b")))
        await node.wait_for(lambda: node.state.runners and
                            next(iter(node.state.runners.values())).busy == 1)
        started = time.monotonic()
        qwq = asyncio.create_task(c.post("/api/chat", json=chat("qwq:32b")))
        await node.wait_for(lambda: next(iter(node.state.runners.values())).keep_alive_ns == 0)
        assert int((await ps(c))["codestral:22b"][:4]) < 2200                   # pin destroyed
        second = asyncio.create_task(c.post("/api/chat", json=chat("codestral:22b", "again")))
        r1, r2 = await asyncio.gather(first, second)
        victim_done = time.monotonic() - started
        assert not qwq.done() and "codestral:22b" not in node.loaded_models()  # never both
        rq = await qwq
    assert [r.status_code for r in (r1, r2, rq)] == [200, 200, 200]
    assert r2.json()["load_duration"] < 100_000_000              # attached to the loaded victim
    assert rq.json()["load_duration"] >= victim_done * 0.9 * 1e9
    assert node.loaded_models() == ["qwq:32b"]


async def test_victim_is_idle_first_then_shortest_keep_alive_pinned_last(sim: Simulator) -> None:
    """§7: victim choice "idle runners first, then the shortest keep-alive, … a pinned -1
    model goes last"."""
    node = await sim.add_node(models=["llama3.2:1b", "llama3.1:8b", "qwq:32b"], vram=26 * GiB,
                              timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        await c.post("/api/generate", json={"model": "llama3.2:1b", "keep_alive": -1})
        await c.post("/api/generate", json={"model": "llama3.1:8b", "keep_alive": "5m"})
        await c.post("/api/generate", json={"model": "qwq:32b"})     # 1.6 + 5.4 + 19.8 > 26 GiB
        assert sorted(await ps(c)) == ["llama3.2:1b", "qwq:32b"]    # the pinned one stayed

    node = await sim.add_node(models=["llama3.2:1b", "llama3.1:8b", "qwq:32b"], vram=26 * GiB,
                              reply_tokens=30, timing=Timing(load_delay=0.02, gen_tps=20))
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        await c.post("/api/generate", json={"model": "llama3.2:1b", "keep_alive": -1})
        await c.post("/api/generate", json={"model": "llama3.1:8b", "keep_alive": "1m"})
        busy = asyncio.create_task(c.post("/api/chat", json=chat("llama3.1:8b")))  # 1.5 s
        await node.wait_for(lambda: any(r.busy for r in node.state.runners.values()))
        r = await c.post("/api/generate", json={"model": "qwq:32b"})
        assert not busy.done()                     # the idle (pinned) one went, without waiting
        assert sorted(await ps(c)) == ["llama3.1:8b", "qwq:32b"]
        assert r.json()["done_reason"] == "load"
        await busy


async def test_two_pinned_models_that_do_not_fit_evict_each_other(sim: Simulator) -> None:
    """§7: "Two pinned models that do not fit together therefore evict each other on every
    preload"."""
    node = await sim.add_node(models=["codestral:22b", "qwq:32b"], timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        for model in ("codestral:22b", "qwq:32b", "codestral:22b"):
            await c.post("/api/generate", json={"model": model, "keep_alive": -1})
            assert list(await ps(c)) == [model]
    assert node.loads == 3


async def test_num_parallel_is_per_runner(sim: Simulator) -> None:
    """§7: "OLLAMA_NUM_PARALLEL is per runner … two loaded models serve in parallel if both
    fit"."""
    node = await sim.add_node(models=["llama3.2:1b", "llama3.1:8b"], num_parallel=1,
                              reply_tokens=30, timing=Timing(load_delay=0.01, gen_tps=20))
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        for model in ("llama3.2:1b", "llama3.1:8b"):
            await c.post("/api/generate", json={"model": model})
        async with c.stream("POST", "/api/chat", json={**chat("llama3.2:1b"), "stream": True}) as a:
            lines = a.aiter_lines()
            await lines.__anext__()                              # a holds its runner's slot
            r = await c.post("/api/chat", json=chat("llama3.1:8b", "other",
                                                    options={"num_predict": 4}))
            assert r.status_code == 200 and r.json()["total_duration"] < 1e9  # no wait for a
            done = json.loads([line async for line in lines][-1])
    assert done["done"] is True and done["total_duration"] > 1.3e9   # a ran 1.5 s meanwhile


async def test_a_loaded_model_queues_without_bound_and_without_a_byte(sim: Simulator) -> None:
    """§7 "Queueing": requests for a loaded runner wait on its slots with no bound and no
    bytes sent; a loaded model never gets the 503 of the bounded queue."""
    node = await sim.add_node(models=["codestral:22b"], num_parallel=1, max_queue=1,
                              reply_tokens=20, timing=Timing(load_delay=0.01, gen_tps=40))
    body = chat("codestral:22b")
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        await c.post("/api/generate", json={"model": "codestral:22b"})
        async with c.stream("POST", "/api/chat", json={**body, "stream": True}) as first:
            lines = first.aiter_lines()
            await lines.__anext__()                                     # holds the only slot
            queued = [asyncio.create_task(c.post("/api/chat", json=body)) for _ in range(3)]
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            raw = b'{"model":"codestral:22b","messages":[{"role":"user","content":"x"}]}'
            writer.write(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(raw), raw))
            await node.wait_for(lambda: node.waiting == 4)
            try:
                await asyncio.wait_for(reader.read(1), timeout=0.2)
                raise AssertionError("a queued request got a byte before its turn")
            except asyncio.TimeoutError:
                pass
            async for _ in lines:
                pass
        results = await asyncio.gather(*queued)
        assert (await reader.read(12)).startswith(b"HTTP/1.1 200")
        writer.close()
    assert [r.status_code for r in results] == [200, 200, 200]


async def test_only_loads_enter_the_bounded_queue(sim: Simulator) -> None:
    """§7 "Queueing": requests that need a (re)load enter the bounded queue
    (OLLAMA_MAX_QUEUE); beyond it 503 "server busy…", while a loaded model still answers."""
    node = await sim.add_node(models=["llama3.2:1b", "llama3.1:8b", "all-minilm"], max_queue=1,
                              vram=48 * GiB, timing=Timing(load_delay=2.0))
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        await c.post("/api/embed", json={"model": "all-minilm"})
        loading = asyncio.create_task(c.post("/api/generate", json={"model": "llama3.1:8b"}))
        await node.wait_for(lambda: node.load_lock.locked())
        queued = asyncio.create_task(c.post("/api/generate", json={"model": "llama3.2:1b"}))
        await node.wait_for(lambda: node.pending_loads == 1)
        r = await c.post("/api/chat", json=chat("llama3.2:1b"))
        assert (r.status_code, r.json()) == (503, {"error": BUSY_ERROR})
        r = await c.post("/api/embed", json={"model": "all-minilm", "input": "hi"})
        assert r.status_code == 200                                 # loaded: never 503
        loading.cancel()
        assert (await queued).json()["done_reason"] == "load"
