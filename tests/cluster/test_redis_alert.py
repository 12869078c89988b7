"""Redis down under [cluster]: shown by `ollafleet status` and the page, alerted once after
[alerts] `after`, and its recovery once (issue 18: "logged once, shown in /status, alerted")."""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.reconciler.daemon.test_alerts import Clock, Receiver, serve_receiver

from .conftest import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    async with serve_receiver(rec) as url:
        yield rec, url


async def status_cli(url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reconciler", "status", "--url", url, cwd=ROOT,
        env={**os.environ, "COLUMNS": "250"}, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


async def test_redis_down_is_shown_and_alerted_once_and_its_recovery_once(
        sim: Simulator, tmp_path: Path, redis_server: RedisServer, receiver: tuple[Receiver, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    rec, url = receiver
    monkeypatch.setenv("OLLAFLEET_TEST_WEBHOOK", url)
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(
        'version = 1\n[balancer]\nlisten = "127.0.0.1:0"\npoll_interval = "0.2s"\n'
        '[reconcile]\ninterval = "60s"\nretry_interval = "1s"\nstatus_listen = "127.0.0.1:0"\n'
        f'[cluster]\nredis = "{redis_server.url}"\nname = "lb-1"\nlease = "2s"\n'
        '[alerts]\nwebhook = "${OLLAFLEET_TEST_WEBHOOK}"\nafter = "5m"\n'
        f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n[models."llama3.2:1b"]\n')
    clock = Clock()
    svc = Service(file, drain_timeout=2)
    svc.alerter.clock, svc.alerter.retry_delay = clock, 0.05
    assert await svc.start()
    alerter = svc.alerter
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            async def cluster() -> dict:  # type: ignore[type-arg]
                return (await client.get(svc.status_url + "/status")).json()["cluster"]  # type: ignore[no-any-return]

            async def leading() -> bool:
                last = svc.daemon.last_pass
                return (await cluster())["role"] == "leader" and bool(last and last["ok"])
            await wait_until(leading)
            out = await status_cli(svc.status_url)
            assert "Cluster lb-1: leader" in out and "Redis reachable" in out, out
            for _ in range(60):  # a healthy hour, a minute at a time
                clock.t += 60
                alerter.evaluate()
            assert alerter.queued() == 0 and rec.attempts == 0

            redis_server.stop()

            async def seen_down() -> bool:   # by the alerter, and the lease is gone (a renewal failed)
                c = await cluster()
                return "cluster:redis" in alerter.open and c["redis"] == "down" and c["role"] == "standby"
            await wait_until(seen_down)
            out = await status_cli(svc.status_url)
            assert "Cluster lb-1: standby" in out and "Redis unreachable since" in out, out
            page = (await client.get(svc.status_url + "/")).text
            assert '<div class="box" id="cluster">' in page and "Redis unreachable</span> since" in page
            clock.t += 240
            alerter.evaluate()
            assert alerter.queued() == 0, "alerted before `after`"
            clock.t += 61
            for _ in range(20):  # ten more minutes down
                alerter.evaluate()
                clock.t += 30
                await asyncio.sleep(0.02)
            await wait_until(lambda: _delivered(rec, 1))

            redis_server.start()  # same port, empty

            async def recovered() -> bool:
                c = await cluster()
                return c["redis"] == "up" and c["balancer"]["redis"] == "up" and "cluster:redis" not in alerter.open
            await wait_until(recovered)
            await wait_until(lambda: _delivered(rec, 2))
            for _ in range(10):
                clock.t += 60
                alerter.evaluate()
            await asyncio.sleep(0.3)
    finally:
        await svc.stop()
    down, back = rec.texts
    assert "lb-1 cannot reach Redis" in down and "no pass applies" in down and "recovered" not in down
    assert "recovered: daemon lb-1 cannot reach Redis" in back


async def _delivered(rec: Receiver, n: int) -> bool:
    return len(rec.texts) >= n
