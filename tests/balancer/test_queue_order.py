"""The balancer's queue (waitlist.py): who goes first, and who never goes at all."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from balancer.tasks import TaskIdent
from simulator import Fault, Timing
from tests.balancer.conftest import CHAT, chat_lines, until

CODE, QWQ = "codestral:22b", "qwq:32b"


async def test_queued_requests_of_clients_that_left_never_reach_a_node(sim, make_balancer,
                                                                        http) -> None:
    node = await sim.add_node(name="gpu-1", models=[CODE], timing=Timing.instant())
    node.set_fault(Fault.SLOW_TOKENS, delay=0.25)  # 12 tokens: ~3 s a chat
    b = await make_balancer([node], queue_timeout=120.0)
    blocker = asyncio.create_task(chat_lines(http, b))
    await until(lambda: b.metrics.in_flight == 1)
    raw = json.dumps(CHAT).encode()
    head = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode()
    ghosts = []
    for _ in range(100):
        _, writer = await asyncio.open_connection(b.host, b.port)
        writer.write(head + raw)
        ghosts.append(writer)
    await until(lambda: b.metrics.queued == 100, timeout=10)
    await asyncio.sleep(1.0)  # each client gives up after a second
    for w in ghosts:
        w.close()
    await until(lambda: b.metrics.queued == 0, timeout=5)
    started = time.monotonic()
    status, lines, broke = await chat_lines(http, b)  # the same user as the ghosts
    assert status == 200 and broke is None
    assert time.monotonic() - started < 8.0  # behind the blocker only, not 100 ghosts
    await blocker
    chats = [r for r in node.requests if r.path == "/api/chat"]
    assert len(chats) == 2, f"{len(chats) - 2} ghost(s) ran on the GPU"


@pytest.mark.parametrize("nodes", [2, 3])
async def test_a_user_with_one_request_is_not_served_after_a_user_with_ten(
        sim, make_balancer, nodes: int) -> None:
    gpus = [await sim.add_node(name=f"gpu-{i}", models=[CODE], timing=Timing.instant())
            for i in range(nodes)]
    for g in gpus:
        g.set_fault(Fault.SLOW_TOKENS, delay=0.02)
    b = await make_balancer(gpus, queue_timeout=120.0)

    async def send(session: aiohttp.ClientSession, user: str, i: int) -> None:
        body = {"model": CODE, "messages": [{"role": "user", "content": f"{user} {i} " * 50}]}
        async with session.post(b.url + "/api/chat", json=body,
                                headers={"X-OpenWebUI-User-Id": user}) as r:
            assert r.status == 200
            await r.read()

    async with aiohttp.ClientSession() as s:
        a = [asyncio.create_task(send(s, "A", i)) for i in range(10)]
        await until(lambda: b.metrics.queued == 10 - nodes)
        await send(s, "B", 0)
        await asyncio.gather(*a)
    started = sorted((r.started, r.body["messages"][0]["content"][0]) for g in gpus
                     for r in g.requests if r.path == "/api/chat")
    order = "".join(user for _, user in started)
    # A's first `nodes` ran at once; B runs in the next round, not after A's ten
    assert order.index("B") < 2 * nodes, order


# -- Open WebUI's task requests ------------------------------------------------------------

def task_body(kind_key: str) -> dict[str, Any]:
    text = (f'### Task:\nDo a background job.\n### Output:\nJSON format: {{ "{kind_key}": [] }}\n'
            "### Chat History:\n<chat_history>\nUSER: hi\nASSISTANT: hello\n</chat_history>")
    return {"model": CODE, "stream": False, "messages": [{"role": "user", "content": text}]}


def person(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "stream": False, "messages": [{"role": "user", "content": text}]}


async def post(http: aiohttp.ClientSession, b: Any, body: dict[str, Any],
               user: str = "u") -> tuple[int, float]:
    async with http.post(b.url + "/api/chat", json=body,
                         headers={"X-OpenWebUI-User-Id": user}) as r:
        await r.read()
        return r.status, time.monotonic()


async def test_tasks_wait_behind_people_and_never_load_a_model(sim, make_balancer, http) -> None:
    """gpu-1 holds codestral (the task model), gpu-2 qwq. A qwq user's tasks wait for gpu-1,
    behind a person's codestral request, and never load codestral onto gpu-2."""
    timing = Timing(load_delay=2.0, time_scale=0.1)
    g1 = await sim.add_node(name="gpu-1", models=[CODE, QWQ], timing=timing)
    g2 = await sim.add_node(name="gpu-2", models=[CODE, QWQ], timing=timing)
    b = await make_balancer([g1, g2], queue_timeout=120.0, poll_interval=0.2,
                            tasks=TaskIdent(model=CODE))
    assert (await post(http, b, person(CODE, "warm up")))[0] == 200  # gpu-1 gets codestral
    await until(lambda: any(s.runner_model == CODE for s in b.states()))
    holder = next(s.name for s in b.states() if s.runner_model == CODE)
    other = next(s.name for s in b.states() if s.name != holder)
    assert (await post(http, b, person(QWQ, "think")))[0] == 200  # the other gets qwq
    assert [s.runner_model for s in b.states() if s.name == other] == [QWQ]
    for g in (g1, g2):
        g.set_fault(Fault.SLOW_TOKENS, delay=0.05)
    loads = b.metrics.model_loads_caused
    # a person's long codestral request holds gpu-1; tasks arrive; then another person
    first = asyncio.create_task(post(http, b, person(CODE, "long one"), "p1"))
    await until(lambda: b.metrics.in_flight == 1)
    tasks = [asyncio.create_task(post(http, b, task_body(k), "t"))
             for k in ("title", "tags", "follow_ups")]
    await until(lambda: b.metrics.tasks.queued == 3)
    second = asyncio.create_task(post(http, b, person(CODE, "next turn"), "p2"))
    results = await asyncio.gather(first, second, *tasks)
    assert all(status == 200 for status, _ in results)
    person_done = results[1][1]
    assert all(t_done > person_done for _, t_done in results[2:]), "a task went before a person"
    assert b.metrics.tasks.served_total == 3 and b.metrics.tasks.model_loads_caused == 0
    assert b.metrics.model_loads_caused == loads
    on = {r.body["messages"][0]["content"][:9]: r for r in [*g1.requests, *g2.requests]
          if r.path == "/api/chat"}
    task_nodes = {n.name for n in (g1, g2) for r in n.requests
                  if r.path == "/api/chat" and "### Task:" in json.dumps(r.body)}
    assert task_nodes == {holder}, on.keys()


async def test_a_task_that_waits_past_task_timeout_is_answered_as_failed(sim, make_balancer,
                                                                         http) -> None:
    node = await sim.add_node(name="gpu-1", models=[CODE], timing=Timing.instant())
    node.set_fault(Fault.SLOW_TOKENS, delay=0.1)  # a person's chat: ~1.2 s
    b = await make_balancer([node], queue_timeout=120.0, tasks=TaskIdent(model=CODE),
                            task_timeout=0.3)
    busy = asyncio.create_task(post(http, b, person(CODE, "busy")))
    await until(lambda: b.metrics.in_flight == 1)
    started = time.monotonic()
    async with http.post(b.url + "/api/chat", json=task_body("title")) as r:
        assert r.status == 503 and "task_timeout" in (await r.json())["error"]
    assert time.monotonic() - started < 1.0
    assert b.metrics.tasks.timed_out_total == 1 and b.metrics.tasks.queued == 0
    assert (await busy)[0] == 200


async def test_a_task_under_way_makes_way_for_a_person(sim, make_balancer, http) -> None:
    node = await sim.add_node(name="gpu-1", models=[CODE], timing=Timing.instant())
    b = await make_balancer([node], queue_timeout=120.0, tasks=TaskIdent(model=CODE),
                            silence_timeout=30.0)  # a non-streamed answer sends nothing until done
    assert (await post(http, b, person(CODE, "warm up")))[0] == 200
    node.set_fault(Fault.SLOW_TOKENS, delay=0.3)  # 12 tokens: ~4 s an answer
    task = asyncio.create_task(post(http, b, task_body("title"), "t"))
    await until(lambda: b.metrics.in_flight == 1)
    started = time.monotonic()
    async with http.post(b.url + "/api/chat", json={**person(CODE, "now"), "stream": True},
                         headers={"X-OpenWebUI-User-Id": "p"}) as r:
        await r.content.readline()  # the person's first token
        waited = time.monotonic() - started
        await r.read()
    assert waited < 2.0, f"the person waited {waited:.1f} s behind a title"
    status, _ = await task  # the task ran again after the person, and was answered
    assert status == 200
    assert b.metrics.tasks.preempted_total == 1 and b.metrics.tasks.served_total == 2
    assert node.cancelled_generations >= 1
