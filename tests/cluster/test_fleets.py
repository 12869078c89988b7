"""Several fleets on one Redis: every key carries the fleet's name ([cluster] fleet, by default
the file's name), so each fleet has its own leader and its own slots, even for nodes of the
same name."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from reconciler.config import load_text
from reconciler.daemon.run import Service
from simulator import Simulator, SimNode, Timing

from .conftest import RedisServer, wait_until

MODEL = "llama3.2:1b"


def fleet_file(redis: str, node: SimNode, fleet: str = "") -> str:
    return ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\npoll_interval = "0.2s"\nqueue_timeout = "0s"\n'
            '[reconcile]\ninterval = "60s"\nretry_interval = "0.5s"\nstatus_listen = "127.0.0.1:0"\n'
            f'[cluster]\nredis = "{redis}"\nlease = "3s"\nslot_lease = "3s"\n'
            + (f'fleet = "{fleet}"\n' if fleet else "")
            + f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n[models."{MODEL}"]\n')


def test_the_fleet_defaults_to_the_file_name() -> None:
    text = 'version = 1\n[cluster]\nredis = "redis://127.0.0.1:6379/0"\n'
    assert load_text(text, "/etc/ollafleet/lab-a.toml", env={}).cluster.fleet_name == "lab-a"  # type: ignore[union-attr]
    named = load_text(text + 'fleet = "lab-b"\n', "/etc/ollafleet/lab-a.toml", env={})
    assert named.cluster is not None and named.cluster.key_prefix == "ollafleet:lab-b:"


@pytest.mark.parametrize("spelled", ["by file name", "by the fleet key"])
async def test_two_fleets_on_one_redis_each_lead_and_keep_their_own_slots(
        tmp_path: Path, redis_server: RedisServer, spelled: str) -> None:
    services: list[Service] = []
    async with Simulator() as sim:
        # each fleet has a node called gpu-1, one request at a time; the first answers slowly
        slow = await sim.add_node("pc-a", models=[MODEL], timing=Timing(gen_tps=5), reply_tokens=40)
        fast = await sim.add_node("pc-b", models=[MODEL], timing=Timing.instant())
        for name, node in (("lab-a", slow), ("lab-b", fast)):
            if spelled == "by file name":
                file = tmp_path / f"{name}.toml"
                file.write_text(fleet_file(redis_server.url, node))
            else:                                   # the same file name on both: the key tells them apart
                file = tmp_path / name / "desired_state.toml"
                file.parent.mkdir()
                file.write_text(fleet_file(redis_server.url, node, fleet=name))
            svc = Service(file, drain_timeout=2)
            assert await svc.start()
            services.append(svc)
        a, b = services
        try:
            async def both_lead() -> bool:
                return all(s.cluster is not None and s.cluster.lease.leader for s in services)
            await wait_until(both_lead, 20)        # one standby for ever, before
            assert a.balancer and b.balancer

            async def polled() -> bool:
                return all(n.reachable for s in services for n in s.balancer.states())  # type: ignore[union-attr]
            await wait_until(polled, 20)
            body = {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": "hi"}]}
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                long = asyncio.create_task(client.post(a.balancer.url + "/api/chat", json=body))

                async def busy() -> bool:
                    return any(n.in_flight for n in a.balancer.states())  # type: ignore[union-attr]
                await wait_until(busy, 20)
                # lab-b's gpu-1 is another PC: lab-a's request must not take its only slot (503 at once, before)
                other = await client.post(b.balancer.url + "/api/chat", json=body)
                assert other.status_code == 200, other.text
                assert (await long).status_code == 200
            redis = aioredis.Redis.from_url(redis_server.url)
            try:
                keys = sorted(k.decode() for k in await redis.keys("ollafleet:*"))
            finally:
                await redis.aclose()
            assert "ollafleet:lab-a:leader" in keys and "ollafleet:lab-b:leader" in keys, keys
            assert all(k.startswith(("ollafleet:lab-a:", "ollafleet:lab-b:")) for k in keys), keys
            status = a.daemon.cluster_status() if a.daemon.cluster_status else {}
            assert status.get("fleet") == "lab-a"
        finally:
            for svc in services:
                await svc.stop()


async def test_two_fleets_left_with_the_same_name_are_told_apart_in_status_and_log(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    services: list[Service] = []
    async with Simulator() as sim:
        for name in ("lab-a", "lab-b"):             # both files are desired_state.toml, no fleet key
            node = await sim.add_node(f"pc-{name}", models=[MODEL], timing=Timing.instant())
            file = tmp_path / name / "desired_state.toml"
            file.parent.mkdir()
            file.write_text(fleet_file(redis_server.url, node).replace("[cluster]\n", f'[cluster]\nname = "{name}"\n'))
            svc = Service(file, drain_timeout=2)
            assert await svc.start()
            services.append(svc)
            if name == "lab-a":
                async def leads() -> bool:
                    return svc.cluster is not None and svc.cluster.lease.leader
                await wait_until(leads, 20)
        a, b = services
        try:
            async def told() -> bool:
                status = b.daemon.cluster_status() if b.daemon.cluster_status else {}
                return status.get("role") == "standby" and status.get("leader_with_other_nodes") == "lab-a"
            await wait_until(told, 20)
            assert sum("declares other nodes than this file" in r.getMessage() for r in caplog.records) == 1
        finally:
            for svc in services:
                await svc.stop()
