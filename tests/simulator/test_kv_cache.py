"""The slot prompt cache and the timing fields of the final chunk, as reference/ollama-api.md
§7 ("Prompt cache per slot", "Counts on a cache hit", "load_duration") describes them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from simulator import SimNode, Simulator, Timing

PROMPT_TPS = 2000.0  # Timing() default: evaluated tokens = duration * rate


def evaluated(reply: dict[str, Any]) -> float:
    return reply["prompt_eval_duration"] / 1e9 * PROMPT_TPS


async def ask(c: httpx.AsyncClient, messages: list[dict[str, str]]) -> dict[str, Any]:
    r = await c.post("/api/chat", json={"model": "codestral:22b", "messages": messages,
                                        "stream": False})
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text}: please review " + "y = y * 2\n" * 100}]


async def test_a_next_turn_that_resends_the_answer_reuses_it(sim: Simulator) -> None:
    """§7 "Prompt cache per slot": the slot keeps the prompt and the generated tokens; a
    next turn that resends the answer evaluates only what is new. §7 "Counts on a cache
    hit": prompt_eval_count is still the whole prompt."""
    node = await sim.add_node(models=["codestral:22b"], reply_tokens=300, timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        history = turn("first")
        first = await ask(c, history)
        history += [first["message"], {"role": "user", "content": "And the tests?"}]
        second = await ask(c, history)
    assert first["eval_count"] == 300
    assert evaluated(second) < 20                       # not the 300-token answer again
    assert second["prompt_eval_count"] > first["prompt_eval_count"] + 300


async def alternate(node: SimNode) -> list[float]:
    """Two conversations, one turn each, then a second turn each: tokens evaluated."""
    out = []
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        a = [{"role": "system", "content": "You review code."}] + turn("alpha")
        b = [{"role": "system", "content": "You review code."}] + turn("beta")
        for conv in (a, b, a, b):
            reply = await ask(c, conv)
            out.append(evaluated(reply))
            conv += [reply["message"], {"role": "user", "content": "and now?"}]
    return out


async def test_parallel_slots_longest_prefix_by_default(sim: Simulator) -> None:
    """§7: with NUM_PARALLEL > 1 a request takes the free slot with the longest common
    prefix, so a new conversation sharing the system prompt overwrites the other's slot."""
    node = await sim.add_node(models=["codestral:22b"], num_parallel=2, timing=Timing.instant())
    first_a, first_b, second_a, second_b = await alternate(node)
    assert min(first_a, first_b, second_a) > 200        # b took a's slot, a took it back
    assert second_b > 200


async def test_multiuser_cache_keeps_each_conversation(sim: Simulator) -> None:
    """§7: OLLAMA_MULTIUSER_CACHE changes the choice: a conversation continues its own slot,
    a new one takes the least recently used slot (with the shared prefix copied)."""
    node = await sim.add_node(models=["codestral:22b"], num_parallel=2, multiuser_cache=True,
                              timing=Timing.instant())
    first_a, first_b, second_a, second_b = await alternate(node)
    assert first_a > 200 and 200 < first_b < first_a    # b reused the shared system prompt
    assert second_a < 20 and second_b < 20
    assert node.loads == 1


async def test_v1_usage_counts_the_whole_prompt_on_a_cache_hit(sim: Simulator) -> None:
    """§7 "Counts on a cache hit": /v1 usage.prompt_tokens is the full prompt length."""
    node = await sim.add_node(models=["codestral:22b"], timing=Timing.instant())
    body = {"model": "codestral:22b", "messages": turn("same")}
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        one = (await c.post("/v1/chat/completions", json=body)).json()["usage"]
        two = (await c.post("/v1/chat/completions", json=body)).json()["usage"]
    assert one["prompt_tokens"] == two["prompt_tokens"] > 200


async def test_final_chunk_timings_as_ollama_fills_them(sim: Simulator) -> None:
    """§7 "load_duration" covers getting the runner (here: waiting behind another load);
    a wait for a busy slot is in total_duration only; prompt_eval_duration is the time
    spent on the uncached part."""
    node = await sim.add_node(models=["codestral:22b"], num_parallel=1, reply_tokens=20,
                              timing=Timing(load_delay=0.4, gen_tps=40))   # 0.5 s per answer
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        msgs = turn("x")
        loader = asyncio.create_task(c.post("/api/generate", json={"model": "codestral:22b"}))
        await node.wait_for(lambda: node.load_lock.locked())
        first, second = await asyncio.gather(ask(c, msgs), ask(c, msgs))
        await loader
    early, late = sorted((first, second), key=lambda r: r["total_duration"])
    load = node.timing.load_seconds(node.state.get("codestral:22b").weights_size)  # type: ignore[union-attr]
    assert early["load_duration"] > 0.7 * load * 1e9           # waited for the other's load
    assert late["load_duration"] < late["total_duration"] - early["eval_duration"]
    assert late["total_duration"] > early["total_duration"] + 0.8 * late["eval_duration"]
    assert evaluated(late) < 5 < evaluated(early)                # the same prompt, cached
    for r in (early, late):
        assert r["total_duration"] >= (r["load_duration"] + r["prompt_eval_duration"]
                                       + r["eval_duration"])


async def test_realistic_timing_and_a_faster_day(sim: Simulator) -> None:
    """Issue 14's real-world numbers: loads 8-12 s for these models, prompts ~2000 tokens/s,
    25-35 tokens/s generated; `time_scale` runs it faster with the same reported numbers."""
    timing = Timing.realistic(time_scale=0.002)
    node = await sim.add_node(models=["codestral:22b", "qwq:32b"], timing=timing, reply_tokens=60)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        started = asyncio.get_running_loop().time()
        replies = [await ask(c, turn("x"))]
        r = await c.post("/api/chat", json={"model": "qwq:32b", "messages": turn("y"), "stream": False})
        replies.append(r.json())
        elapsed = asyncio.get_running_loop().time() - started
    for reply in replies:
        assert 8e9 <= reply["load_duration"] <= 13e9
        assert 25 <= reply["eval_count"] / reply["eval_duration"] * 1e9 <= 35
        assert 1500 <= reply["prompt_eval_count"] / reply["prompt_eval_duration"] * 1e9 <= 2500
    modelled = sum(r["total_duration"] for r in replies) / 1e9
    assert modelled > 20 and elapsed < modelled / 10                 # a day runs faster
