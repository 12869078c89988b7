"""Queueing mode end to end on simulated GPUs: the balancer chooses by cost."""
from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp

from simulator import Timing
from tests.balancer.conftest import chat_lines, state, until

CODE, QWQ = "codestral:22b", "qwq:32b"
SCALE = 0.01  # 100x real time: a 12 s load takes 0.12 s
# two models that do not fit one 24 GB GPU together; loads of ~8 s / ~12 s, 30 tokens/s
TIMING = Timing(load_delay=12.5, prompt_tps=2000.0, gen_tps=30.0, warm_load=0.05,
                time_scale=SCALE)


async def office(sim: Any, make_balancer: Any, http: aiohttp.ClientSession,
                 users: list[str], turns: int) -> tuple[Any, list[dict[str, Any]]]:
    nodes = [await sim.add_node(name=f"gpu-{i}", models=[CODE, QWQ], timing=TIMING,
                                reply_tokens=30) for i in range(3)]
    b = await make_balancer(nodes, queue_timeout=600 * SCALE, silence_timeout=120 * SCALE,
                            time_scale=SCALE)
    finals: list[dict[str, Any]] = []

    async def user(i: int, model: str) -> None:
        rng = random.Random(i)
        await asyncio.sleep(rng.uniform(0, 2) * SCALE)
        messages: list[dict[str, str]] = []
        for t in range(turns):
            messages.append({"role": "user", "content": f"user {i} turn {t}: " + "code " * 300})
            status, lines, broke = await chat_lines(http, b, {"model": model,
                                                              "messages": messages})
            assert status == 200 and broke is None, (status, lines)
            finals.append(lines[-1])
            messages.append({"role": "assistant",
                             "content": "".join(x["message"]["content"] for x in lines)})
            await asyncio.sleep(rng.uniform(1, 3) * SCALE)

    await asyncio.gather(*(user(i, m) for i, m in enumerate(users)))
    return b, finals


async def test_two_models_are_served_with_no_more_loads_than_nodes(sim, make_balancer,
                                                                   http) -> None:
    users = [CODE] * 4 + [QWQ] * 2
    b, finals = await office(sim, make_balancer, http, users, turns=4)
    loads = sum(1 for f in finals if f.get("load_duration", 0) >= 1e9)  # modelled seconds
    assert len(finals) == 24 and b.metrics.rejected_total == 0
    assert loads <= 3, f"{loads} model loads on 3 nodes"
    assert b.metrics.model_loads_caused <= 3
    # what the balancer learned is shown per node: the model its GPU holds, and rates
    held = sorted(state(b, f"gpu-{i}").runner_model or "" for i in range(3))
    assert held.count(CODE) >= 1 and held.count(QWQ) >= 1
    learned = [state(b, f"gpu-{i}").learned for i in range(3)]
    assert any(CODE in x and x[CODE]["tokens_per_s"] > 20 for x in learned)
    assert b.metrics.first_token_seconds.count == 24


async def test_an_estimated_wait_beyond_the_queue_timeout_is_503_at_once(sim, make_balancer,
                                                                          http) -> None:
    slow = Timing(load_delay=1.0, prompt_tps=2000.0, gen_tps=0.5, time_scale=SCALE)
    node = await sim.add_node(name="gpu-0", models=[CODE], timing=slow, reply_tokens=30)
    # answers take ~60 modelled seconds; the queue timeout is 30
    b = await make_balancer([node], queue_timeout=30 * SCALE, silence_timeout=120 * SCALE,
                            time_scale=SCALE)
    body = {"model": CODE, "messages": [{"role": "user", "content": "hi"}]}
    assert (await chat_lines(http, b, body))[0] == 200  # learns the rates
    busy = asyncio.create_task(chat_lines(http, b, body))
    await until(lambda: b.metrics.in_flight == 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with http.post(b.url + "/api/chat", json=body) as r:
        assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
        assert "exceeds the queue timeout" in (await r.text())
    assert loop.time() - t0 < 30 * SCALE  # at once, not after waiting out the timeout
    assert (await busy)[0] == 200


async def test_an_expected_model_load_is_not_silence(sim, make_balancer, http) -> None:
    scale = 0.05  # codestral's ~8 s load takes 0.4 s, four times the silence timeout below
    node = await sim.add_node(name="gpu-0", models=[CODE], reply_tokens=5,
                              timing=Timing(load_delay=12.5, gen_tps=30.0, time_scale=scale))
    b = await make_balancer([node], queue_timeout=600 * scale, silence_timeout=0.1,
                            time_scale=scale)
    status, lines, broke = await chat_lines(http, b)
    assert status == 200 and broke is None and lines[-1]["done"] is True
    assert lines[-1]["load_duration"] >= 7e9 and b.metrics.failures_total == 0
    assert state(b, "gpu-0").reliability == "Reliable"


async def test_rates_are_learned_from_answers_that_are_not_streamed(sim, make_balancer,
                                                                    http) -> None:
    """"stream": false (Open WebUI's title and tag requests, scripts) teaches the rates too."""
    node = await sim.add_node(name="gpu-0", models=[CODE], timing=TIMING, reply_tokens=30)
    b = await make_balancer([node], queue_timeout=600 * SCALE, silence_timeout=120 * SCALE,
                            time_scale=SCALE)
    body = {"model": CODE, "stream": False,
            "messages": [{"role": "user", "content": "code " * 400}]}
    async with http.post(b.url + "/api/chat", json=body) as r:
        assert r.status == 200 and r.content_type == "application/json"
        answer = await r.json()
    assert answer["done"] is True and answer["eval_count"] == 30
    learned = await until(lambda: state(b, "gpu-0").learned.get(CODE))  # ends after the answer
    assert learned["answer_tokens"] == 30  # not the default 250
    assert learned["load_s"] > 5 and 20 < learned["tokens_per_s"] < 40
    # /v1 without streaming: only the answer's length (no clock can time its generation)
    async with http.post(b.url + "/v1/chat/completions", json={**body, "max_tokens": 10}) as r:
        assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 10
    await until(lambda: state(b, "gpu-0").learned[CODE]["answer_tokens"] != 30)
    learned = state(b, "gpu-0").learned[CODE]
    assert learned["answer_tokens"] == round(30 + 0.3 * (10 - 30))
    assert 20 < learned["tokens_per_s"] < 40
