"""Loading, keep-alive, runner sharing, slots and queue, eviction, and the KV-cache timing model."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx

from simulator import SimNode, Simulator, Timing

LOAD = {"model": "codestral:22b", "keep_alive": -1}


def year(ts: str) -> int:
    return int(ts[:4])


async def test_load_and_unload_replies(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/generate", json=LOAD)
    obj = r.json()
    assert r.headers["content-type"] == "application/json; charset=utf-8"   # single JSON even when streaming
    assert list(obj) == ["model", "created_at", "response", "done", "done_reason"]
    assert (obj["response"], obj["done"], obj["done_reason"]) == ("", True, "load")
    ps = (await client.get("/api/ps")).json()["models"]
    assert list(ps[0]) == ["name", "model", "size", "digest", "details", "expires_at", "size_vram",
                           "context_length"]
    assert ps[0]["name"] == "codestral:22b" and ps[0]["context_length"] == 4096
    assert year(ps[0]["expires_at"]) > datetime.now().year + 250          # keep_alive -1 → +292 years
    assert ps[0]["size"] > 12569164800 and ps[0]["size_vram"] == ps[0]["size"]
    tags = (await client.get("/api/tags")).json()["models"]
    assert ps[0]["digest"] == tags[0]["digest"]

    r = await client.post("/api/chat", json={"model": "codestral:22b", "messages": [], "keep_alive": 0})
    assert r.json()["message"] == {"role": "assistant", "content": ""} and r.json()["done_reason"] == "unload"
    assert node.loaded_models() == []
    r = await client.post("/api/chat", json={"model": "codestral:22b", "keep_alive": "0"})   # not loaded: still fine
    assert r.json()["done_reason"] == "unload"
    assert (await client.post("/api/generate", json={"model": "nope", "keep_alive": 0})).status_code == 404


async def test_keep_alive_forms_and_expiry(client: httpx.AsyncClient, node: SimNode) -> None:
    await client.post("/api/generate", json={"model": "codestral:22b", "keep_alive": "1h30m"})
    exp = (await client.get("/api/ps")).json()["models"][0]["expires_at"]
    delta = datetime.fromisoformat(exp.replace("Z", "+00:00")).timestamp() - datetime.now().timestamp()
    assert 5300 < delta < 5500
    # a request without keep_alive keeps the runner's value
    await client.post("/api/chat", json={"model": "codestral:22b", "messages": [{"role": "user", "content": "a"}]})
    exp = (await client.get("/api/ps")).json()["models"][0]["expires_at"]
    delta = datetime.fromisoformat(exp.replace("Z", "+00:00")).timestamp() - datetime.now().timestamp()
    assert 5300 < delta < 5500
    await client.post("/api/generate", json={"model": "codestral:22b", "keep_alive": 0.05})
    await node.wait_for(lambda: not node.loaded_models(), timeout=3)


async def test_base_and_derived_share_one_runner(client: httpx.AsyncClient, node: SimNode) -> None:
    node.install("codestral-30k", from_="codestral:22b", parameters={"temperature": 0.1})
    await client.post("/api/generate", json={"model": "codestral-30k", "keep_alive": -1})
    await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "hi", "stream": False})
    assert node.loaded_models() == ["codestral-30k:latest"]     # named after the one that loaded it
    # different runner options (num_ctx) reload it
    r = await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "hi", "stream": False,
                                                 "options": {"num_ctx": 8192}})
    assert r.json()["load_duration"] > 100_000_000
    ps = (await client.get("/api/ps")).json()["models"]
    assert [(m["name"], m["context_length"]) for m in ps] == [("codestral:22b", 8192)]
    assert year(ps[0]["expires_at"]) < 2200     # §7 "Reload drops the pin": 5 m default now
    r = await client.post("/api/generate", json={"model": "codestral:22b", "keep_alive": -1,
                                                 "options": {"num_ctx": 16384}})
    ps = (await client.get("/api/ps")).json()["models"]
    assert ps[0]["context_length"] == 16384 and year(ps[0]["expires_at"]) > 2200  # request's
    await client.post("/api/generate", json={"model": "codestral-30k", "keep_alive": 0})
    assert node.loaded_models() == []                          # unloading one name unloads the slot


async def test_eviction_by_vram_and_max_loaded(sim: Simulator) -> None:
    node = await sim.add_node(name="n", models=["codestral:22b", "qwq:32b", "llama3.2:1b", "llama3.1:8b",
                                                "all-minilm"], timing=Timing.instant(), max_loaded=3)
    async with httpx.AsyncClient(base_url=node.url) as c:
        await c.post("/api/generate", json={"model": "codestral:22b"})
        await c.post("/api/generate", json={"model": "qwq:32b"})          # 13 + 21 GB > 24 GiB
        assert node.loaded_models() == ["qwq:32b"]
        await c.post("/api/generate", json={"model": "llama3.2:1b"})
        await c.post("/api/embed", json={"model": "all-minilm"})
        assert len(node.loaded_models()) == 3
        await c.post("/api/generate", json={"model": "llama3.1:8b"})      # the least recently used goes
        assert "qwq:32b" not in node.loaded_models() and len(node.loaded_models()) == 3


async def test_cold_load_is_reported_and_takes_time(sim: Simulator) -> None:
    node = await sim.add_node(name="n", models=["codestral:22b"], timing=Timing(load_delay=0.3))
    async with httpx.AsyncClient(base_url=node.url) as c:
        msgs = {"model": "codestral:22b", "messages": [{"role": "user", "content": "a"}], "stream": False}
        cold = (await c.post("/api/chat", json=msgs)).json()
        warm = (await c.post("/api/chat", json=msgs)).json()
    assert cold["load_duration"] > 150_000_000 > warm["load_duration"]
    assert cold["total_duration"] >= cold["load_duration"] + cold["eval_duration"]


async def test_repeated_conversation_prefix_is_cheaper(client: httpx.AsyncClient) -> None:
    history = [{"role": "system", "content": "You are a careful reviewer of long code. " * 40},
               {"role": "user", "content": "Please review this function: " + "x = x + 1\n" * 200}]

    async def ask(messages: list[dict[str, str]]) -> dict:
        r = await client.post("/api/chat", json={"model": "codestral:22b", "messages": messages, "stream": False})
        return r.json()

    first = await ask(history)
    history += [first["message"], {"role": "user", "content": "And the tests?"}]
    second = await ask(history)
    assert first["prompt_eval_count"] > 500
    # §7 "Counts on a cache hit": the count is the whole prompt, the duration the time spent
    assert second["prompt_eval_count"] > first["prompt_eval_count"]
    assert second["prompt_eval_duration"] < first["prompt_eval_duration"] / 10
    other = await ask([{"role": "user", "content": "Something else entirely " * 100}])
    assert other["prompt_eval_duration"] > 100_000_000       # a different conversation evicts the cache
    again = await ask(history)
    assert again["prompt_eval_duration"] > first["prompt_eval_duration"]


async def test_slots_and_queue(sim: Simulator) -> None:
    """§7: a loaded runner serves num_parallel requests at once; the rest wait on it without
    bound (max_queue only bounds loads)."""
    node = await sim.add_node(name="n", models=["codestral:22b"], timing=Timing(gen_tps=100, load_delay=0),
                              num_parallel=2, max_queue=1, reply_tokens=20)
    body = {"model": "codestral:22b", "messages": [{"role": "user", "content": "a"}], "stream": False}
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        await c.post("/api/generate", json={"model": "codestral:22b"})
        tasks = [asyncio.create_task(c.post("/api/chat", json=body)) for _ in range(4)]
        await node.wait_for(lambda: node.waiting == 2)
        assert node.loaded_models() == ["codestral:22b"]
        results = await asyncio.gather(*tasks)
    assert [r.status_code for r in results] == [200] * 4
    totals = sorted(r.json()["total_duration"] for r in results)
    assert totals[2] > 1.5 * totals[1]                        # two ran, two waited for a slot


async def test_loading_request_waits_for_a_concurrent_load(sim: Simulator) -> None:
    node = await sim.add_node(name="n", models=["codestral:22b"], timing=Timing(load_delay=0.2), num_parallel=2)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        a, b = await asyncio.gather(c.post("/api/generate", json={"model": "codestral:22b"}),
                                    c.post("/api/generate", json={"model": "codestral:22b", "prompt": "x",
                                                                  "stream": False}))
    assert a.json()["done_reason"] == "load" and b.json()["done"] is True
    assert node.loaded_models() == ["codestral:22b"]


async def test_an_abandoned_load_does_not_strand_a_waiting_request(sim: Simulator) -> None:
    node = await sim.add_node(name="n", models=["codestral:22b"], timing=Timing(load_delay=0.3), num_parallel=2)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        first = asyncio.create_task(c.post("/api/generate", json={"model": "codestral:22b", "keep_alive": "1h"}))
        await node.wait_for(lambda: node.state.runners)
        second = asyncio.create_task(c.post("/api/generate", json={"model": "codestral:22b", "prompt": "x",
                                                                   "stream": False}))
        await asyncio.sleep(0.05)
        first.cancel()                           # the loading client goes away
        r = await second
    assert r.status_code == 200 and r.json()["done"] is True
    assert node.loaded_models() == ["codestral:22b"]
