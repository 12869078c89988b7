"""Two daemons (in-process Services) share one Redis and two simulated nodes."""
from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import simulator.engine
from reconciler.daemon.run import Service
from simulator import Simulator, SimNode, Timing

from .conftest import RedisServer, wait_until

MODEL = "llama3.2:1b"


def cluster_file(redis: str, name: str, nodes: list[SimNode], queue: str = "0s",
                 models: str = f'[models."{MODEL}"]\n') -> str:
    text = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\nsilence_timeout = "20s"\n'
            f'poll_interval = "0.2s"\nqueue_timeout = "{queue}"\n'
            '[reconcile]\ninterval = "60s"\nretry_interval = "0.5s"\nstatus_listen = "127.0.0.1:0"\n'
            f'[cluster]\nredis = "{redis}"\nname = "{name}"\nlease = "3s"\nslot_lease = "3s"\n')
    for node in nodes:
        text += f'[[nodes]]\nname = "{node.name}"\nurl = "{node.url}"\nmax_concurrent = 2\n'
    return text + models


class Peaks:
    """Requests each simulated node is running or queueing, and the most at once."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.served: list[str] = []

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = simulator.engine.slot

        @contextlib.asynccontextmanager
        async def counted(node: Any, runner: Any, prompt: Any) -> AsyncIterator[Any]:
            self.now[node.name] += 1
            self.peak[node.name] = max(self.peak[node.name], self.now[node.name])
            self.served.append(node.name)
            try:
                async with real(node, runner, prompt) as chosen:
                    yield chosen
            finally:
                self.now[node.name] -= 1
        monkeypatch.setattr(simulator.engine, "slot", counted)


async def start_two(tmp_path: Path, redis: RedisServer, nodes: list[SimNode],
                    queue: str) -> list[Service]:
    services = []
    # each daemon lists the nodes in its own order: without shared caches, B would pick gpu-2
    for name, order in (("a", nodes), ("b", nodes[::-1])):
        file = tmp_path / name / "desired_state.toml"
        file.parent.mkdir()
        file.write_text(cluster_file(redis.url, name, order, queue))
        svc = Service(file, drain_timeout=2)
        assert await svc.start()
        services.append(svc)
    return services


async def chat(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]]) -> httpx.Response:
    return await client.post(url + "/api/chat", json={
        "model": MODEL, "messages": messages, "stream": False})


@pytest.fixture
async def nodes(sim: Simulator) -> list[SimNode]:
    timing = Timing(load_delay=0.05, prompt_tps=20000.0, gen_tps=200.0)
    return [await sim.add_node(f"gpu-{i}", models=[MODEL], num_parallel=2, timing=timing,
                               reply_tokens=20) for i in (1, 2)]


async def test_forty_chats_through_two_balancers_never_overfill_a_node(
        tmp_path: Path, redis_server: RedisServer, nodes: list[SimNode],
        monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = Peaks()
    peaks.patch(monkeypatch)
    a, b = await start_two(tmp_path, redis_server, nodes, queue="120s")
    try:
        assert a.balancer and b.balancer
        async with httpx.AsyncClient(timeout=120) as client:
            load = asyncio.gather(*(
                chat(client, (a if i % 2 else b).balancer.url,  # type: ignore[union-attr]
                     [{"role": "user", "content": f"question {i}"}]) for i in range(40)))
            try:
                answers = await asyncio.wait_for(load, 60)
            except TimeoutError:
                raise AssertionError(f"stuck: {await _diagnose(a, b, peaks)}") from None
        assert [r.status_code for r in answers] == [200] * 40
        assert sum(peaks.peak.values()) > 0 and len(peaks.served) == 40
        # max_concurrent = 2: never three at once on a node, whichever balancer sent them
        assert max(peaks.peak.values()) <= 2, peaks.peak
        assert set(peaks.served) == {"gpu-1", "gpu-2"}
    finally:
        try:  # a hang while stopping would otherwise end in pytest's timeout, with no clue
            await asyncio.wait_for(_stop(a, b), 30)
        except TimeoutError:
            raise AssertionError(f"stopping hung: {_tasks()}")


async def _stop(a: Service, b: Service) -> None:
    await a.stop()
    await b.stop()


async def test_a_conversation_continued_through_the_other_balancer_reaches_its_cache(
        tmp_path: Path, redis_server: RedisServer, nodes: list[SimNode],
        monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = Peaks()
    peaks.patch(monkeypatch)
    a, b = await start_two(tmp_path, redis_server, nodes, queue="0s")
    try:
        assert a.balancer and b.balancer
        async with httpx.AsyncClient(timeout=60) as client:
            for node in nodes:  # both loaded: only the cache tells them apart
                r = await client.post(node.url + "/api/generate", json={"model": MODEL, "prompt": "hi"})
                assert r.status_code == 200
            await a.balancer.refresh()
            await b.balancer.refresh()
            peaks.served.clear()
            talk = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "tell me about the moon"},
                    {"role": "assistant", "content": "it is round"},
                    {"role": "user", "content": "and the sun?"}]
            first = await chat(client, a.balancer.url, talk)
            assert first.status_code == 200
            assert peaks.served == ["gpu-1"]  # a's first node
            talk += [first.json()["message"], {"role": "user", "content": "and mars?"}]
            second = await chat(client, b.balancer.url, talk)
            assert second.status_code == 200
            # b's first node is gpu-2, but gpu-1 holds this conversation's cache
            assert peaks.served == ["gpu-1", "gpu-1"]
            # a new conversation through b still starts on b's first node
            third = await chat(client, b.balancer.url, [{"role": "user", "content": "hello"}])
            assert third.status_code == 200 and peaks.served[-1] == "gpu-2"
    finally:
        await a.stop()
        await b.stop()


async def test_redis_down_mid_load_no_request_fails_no_pass_applies_and_all_resume(
        tmp_path: Path, redis_server: RedisServer, sim: Simulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = Peaks()
    peaks.patch(monkeypatch)
    timing = Timing(load_delay=0.05, prompt_tps=20000.0, gen_tps=100.0)
    nodes = [await sim.add_node(f"gpu-{i}", models=[MODEL], num_parallel=2, timing=timing,
                                reply_tokens=40) for i in (1, 2)]
    a, b = await start_two(tmp_path, redis_server, nodes, queue="120s")
    try:
        assert a.balancer and b.balancer and a.cluster and b.cluster
        await wait_until(lambda: _one_leader(a, b), 30)
        async with httpx.AsyncClient(timeout=120) as client:
            load = asyncio.gather(*(
                chat(client, (a if i % 2 else b).balancer.url,  # type: ignore[union-attr]
                     [{"role": "user", "content": f"question {i}"}]) for i in range(40)))
            await wait_until(lambda: _served(peaks, 4), 30)
            redis_server.stop()
            assert len(peaks.served) < 40  # mid-load: most chats are still to come
            applied = [s.daemon.counters.changes_applied for s in (a, b)]
            for svc in (a, b):  # a change the leader would apply at once
                svc.path.write_text(svc.path.read_text() + '[models."llama3.1:8b"]\n')

            async def everyone_saw_redis_down_and_the_file() -> bool:
                for svc in (a, b):
                    s = await _status(client, svc)
                    if s["cluster"]["role"] != "standby" or s["cluster"]["redis"] != "down" \
                            or s["cluster"]["balancer"]["redis"] != "down" or s["pass_running"] \
                            or "llama3.1:8b" not in svc.path.read_text() \
                            or s["revision"]["sha256"] != _sha(svc.path):
                        return False
                return True
            await wait_until(everyone_saw_redis_down_and_the_file, 60)
            metrics = (await client.get(a.status_url + "/metrics")).text
            assert "ollafleet_cluster_redis_up 0.0" in metrics  # for an alert
            assert "ollafleet_cluster_leader 0.0" in metrics
            try:  # a hang names where every task waits instead of running into pytest's timeout
                answers = await asyncio.wait_for(load, 120)
            except TimeoutError:
                raise AssertionError(f"chats hung with Redis down: {_tasks()}")
            assert [r.status_code for r in answers] == [200] * 40
            # nobody held the lease: nothing was applied while Redis was down
            assert [s.daemon.counters.changes_applied for s in (a, b)] == applied
            assert all("llama3.1:8b" not in n.installed_models() for n in nodes)
            redis_server.start()  # same port, empty
            await wait_until(lambda: _installed_everywhere(nodes, "llama3.1:8b"), 60)
            await wait_until(lambda: _one_leader(a, b), 30)

            async def both_share_again() -> bool:
                for svc in (a, b):
                    s = (await _status(client, svc))["cluster"]
                    if s["redis"] != "up" or s["balancer"]["redis"] != "up":
                        return False
                return True
            await wait_until(both_share_again, 30)  # by themselves, with no request needed
            r = await chat(client, a.balancer.url, [{"role": "user", "content": "again"}])
            assert r.status_code == 200
    finally:
        try:
            await asyncio.wait_for(_stop(a, b), 30)
        except TimeoutError:
            raise AssertionError(f"stopping hung: {_tasks()}")


async def _status(client: httpx.AsyncClient, svc: Service) -> dict[str, Any]:
    return (await client.get(svc.status_url + "/status")).json()  # type: ignore[no-any-return]


async def _one_leader(a: Service, b: Service) -> bool:
    assert a.cluster and b.cluster
    return [a.cluster.lease.leader, b.cluster.lease.leader].count(True) == 1


async def _served(peaks: Peaks, n: int) -> bool:
    return len(peaks.served) >= n


async def _installed_everywhere(nodes: list[SimNode], model: str) -> bool:
    return all(model in n.installed_models() for n in nodes)


def _sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_drain_by_one_daemon_keeps_the_model_off_that_node_in_every_balancer(
        tmp_path: Path, redis_server: RedisServer, nodes: list[SimNode],
        monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = Peaks()
    peaks.patch(monkeypatch)
    a, b = await start_two(tmp_path, redis_server, nodes, queue="0s")
    try:
        assert a.balancer and b.balancer
        async with httpx.AsyncClient(timeout=60) as client:
            async def ask() -> str:
                r = await chat(client, b.balancer.url, [{"role": "user", "content": "hi"}])  # type: ignore[union-attr]
                assert r.status_code == 200
                return peaks.served[-1]
            assert await ask() == "gpu-2"  # b's first node
            # a's reconciler re-creates the model on gpu-2 (as wiring.Draining does)
            a.balancer.set_draining("gpu-2", MODEL, True)
            await wait_until(lambda: _drain_written(a), 10)
            assert await ask() == "gpu-1"
            a.balancer.set_draining("gpu-2", MODEL, False)
            await wait_until(lambda: _drain_written(a, none=True), 10)
            assert await ask() == "gpu-2"
    finally:
        await a.stop()
        await b.stop()


async def _drain_written(svc: Service, none: bool = False) -> bool:
    assert svc.cluster is not None
    shared = svc.cluster.shared
    fields = await shared.client.hkeys(shared.drains)
    return (len(fields) == 0) if none else len(fields) == 1


async def test_rates_learned_through_one_balancer_reach_the_other(
        tmp_path: Path, redis_server: RedisServer, nodes: list[SimNode]) -> None:
    a, b = await start_two(tmp_path, redis_server, nodes, queue="0s")
    try:
        assert a.balancer and b.balancer
        assert not b.balancer.fleet.knowledge.node("gpu-1").rates
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.post(a.balancer.url + "/api/chat", json={  # learned from the last chunk
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            learned = a.balancer.fleet.knowledge.node("gpu-1").rates[MODEL]

            async def b_knows() -> bool:
                await b.balancer.fleet.shared.refresh()  # type: ignore[union-attr]
                return b.balancer.fleet.knowledge.node("gpu-1").rates.get(MODEL) == learned  # type: ignore[union-attr]
            await wait_until(b_knows, 10)
    finally:
        await a.stop()
        await b.stop()


async def test_slots_of_a_daemon_that_died_free_after_their_lease(
        tmp_path: Path, redis_server: RedisServer, nodes: list[SimNode]) -> None:
    import time

    from balancer.shared import TAKE
    a, b = await start_two(tmp_path, redis_server, nodes, queue="60s")
    try:
        assert b.balancer and b.cluster
        client = b.cluster.shared.client
        for node in nodes:  # a daemon filled every slot, then was killed: nobody renews them
            for i in range(2):
                assert await client.eval(TAKE, 1, b.cluster.shared.slots + node.name, 2, 3000, f"dead/{i}")
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=60) as http:
            r = await chat(http, b.balancer.url, [{"role": "user", "content": "hi"}])
        waited = time.monotonic() - started
        assert r.status_code == 200
        assert waited >= 1.0, waited  # it did wait for the dead daemon's slots ...
        assert waited < 15, waited  # ... which freed by themselves
    finally:
        await a.stop()
        await b.stop()


async def _diagnose(a: Service, b: Service, peaks: Peaks) -> str:
    out = [f"served {len(peaks.served)}, at the nodes now {dict(peaks.now)}"]
    for svc in (a, b):
        assert svc.balancer and svc.cluster
        fleet, shared = svc.balancer.fleet, svc.cluster.shared
        out.append(f"{shared.me}: queued {fleet.metrics.queued}, up {shared.up}, loop "
                   f"{shared._loop}, held {shared.held}, nodes " + ", ".join(
                       f"{n.name} local {n.in_flight} remote {n.remote} draining {dict(n.draining)}"
                       for n in fleet.nodes.values()))
    out.append(_tasks())
    client = a.cluster.shared.client  # type: ignore[union-attr]
    for name in ("gpu-1", "gpu-2"):
        out.append(f"{name}: {await client.zrange(a.cluster.shared.slots + name, 0, -1, withscores=True)}"
                   f" at {await client.time()}")
    return "\n".join(out)


def _tasks() -> str:
    """Where every unfinished task of the loop waits: its chain of awaits, innermost last."""
    out = []
    for task in asyncio.all_tasks():
        chain, coro = [], task.get_coro()
        while coro is not None and hasattr(coro, "cr_frame"):
            frame = coro.cr_frame
            if frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = coro.cr_await
        out.append(f"{task.get_name()}: " + " > ".join(chain) + f" > {coro!r}")
    return "\n".join(out)
