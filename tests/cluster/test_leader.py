"""One reconciler at a time: daemons as processes, a real Redis, a simulated node."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from reconciler.cluster import Fenced, Lease
from reconciler.errors import TargetError
from simulator import Simulator, SimNode, Timing

from .conftest import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
LEASE = 3.0
FIRST, SECOND = "llama3.2:1b", "llama3.1:8b"
KEY = "ollafleet:desired_state:leader"   # the lease of the fleet these desired_state.toml files declare


def daemon_file(redis: str, name: str, node: SimNode, models: list[str]) -> str:
    text = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\npoll_interval = "0.5s"\n'
            '[reconcile]\ninterval = "60s"\nretry_interval = "1s"\nstatus_listen = "127.0.0.1:0"\n'
            f'[cluster]\nredis = "{redis}"\nname = "{name}"\nlease = "{LEASE:g}s"\n'
            f'[[nodes]]\nname = "{node.name}"\nurl = "{node.url}"\n')
    return text + "".join(f'[models."{m}"]\n' for m in models)


class Proc:
    """`ollafleet daemon` in its own process; JSON logs go to a file (a pipe could fill)."""

    def __init__(self, folder: Path, text: str) -> None:
        folder.mkdir()
        self.file = folder / "desired_state.toml"
        self.file.write_text(text)
        self.log = folder / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.status_url = ""

    async def start(self) -> None:
        with open(self.log, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "reconciler", "daemon", str(self.file), "--log-format", "json",
                "--drain-timeout", "2", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)})

        async def listening() -> bool:
            found = self.find(r"status on (http://\S+)/status")
            if found:
                self.status_url = re.search(r"http://\S+?(?=/status)", found["message"]).group(0)  # type: ignore[union-attr]
            return bool(found)
        await wait_until(listening, 30)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def find(self, pattern: str) -> dict[str, Any] | None:
        return next((e for e in self.lines() if re.search(pattern, e["message"])), None)

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(self.status_url + "/status")).json()  # type: ignore[no-any-return]

    async def role(self) -> str:
        return str((await self.status())["cluster"]["role"])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)  # by PID: only the process this test started

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def node(sim: Simulator) -> SimNode:
    return await sim.add_node("gpu-1", timing=Timing.instant())


async def leader_and_standby(tmp_path: Path, redis: RedisServer, node: SimNode) -> tuple[Proc, Proc]:
    a = Proc(tmp_path / "a", daemon_file(redis.url, "a", node, [FIRST]))
    await a.start()
    await wait_until(lambda: _is(a, "leader"), 30)
    await wait_until(lambda: _installed(node, FIRST), 30)
    b = Proc(tmp_path / "b", daemon_file(redis.url, "b", node, [FIRST]))
    await b.start()
    await wait_until(lambda: _is(b, "standby"), 30)
    return a, b


async def _is(proc: Proc, role: str) -> bool:
    return await proc.role() == role


async def _installed(node: SimNode, model: str) -> bool:
    return model in node.installed_models()


async def test_kill_9_the_leader_and_another_applies_the_next_change_within_the_lease(
        tmp_path: Path, redis_server: RedisServer, node: SimNode) -> None:
    a, b = await leader_and_standby(tmp_path, redis_server, node)
    try:
        assert b.find(r"pass \(.*\) (ok|FAILED)") is None  # a standby ran no pass
        a.signal(signal.SIGKILL)
        killed = time.time()
        b.file.write_text(daemon_file(redis_server.url, "b", node, [FIRST, SECOND]))
        await wait_until(lambda: _installed(node, SECOND), LEASE + 20)
        took_over = b.find("b is now the leader")
        assert took_over is not None
        takeover = _when(took_over) - killed
        print(f"takeover after kill -9: {takeover:.2f} s (lease {LEASE:g} s)")
        assert takeover < LEASE + 1.0  # + 1 s for a loaded test machine
        assert await b.role() == "leader"
    finally:
        await a.stop()
        await b.stop()


async def test_a_paused_leader_that_wakes_after_losing_the_lease_applies_nothing(
        tmp_path: Path, redis_server: RedisServer, node: SimNode) -> None:
    a, b = await leader_and_standby(tmp_path, redis_server, node)
    try:
        a.signal(signal.SIGSTOP)
        await wait_until(lambda: _is(b, "leader"), LEASE + 20)
        # only the paused one's file asks for SECOND: whatever puts it on the node is a's doing
        text = daemon_file(redis_server.url, "a", node, [FIRST, SECOND])
        a.file.write_text(text)
        a.signal(signal.SIGCONT)
        sha = hashlib.sha256(text.encode()).hexdigest()

        async def woke_and_read_the_file() -> bool:
            s = await a.status()
            return bool(s["revision"]["sha256"] == sha and not s["pass_running"]
                        and s["cluster"]["role"] == "standby")
        await wait_until(woke_and_read_the_file, 30)
        assert a.find("a lost the leader lease") is not None
        assert not await _installed(node, SECOND)
        assert not any(e["message"].startswith("applied") for e in a.lines()
                       if SECOND in e["message"])
        assert await b.role() == "leader"
    finally:
        await a.stop()
        await b.stop()


def _when(entry: dict[str, Any]) -> float:
    from datetime import datetime
    return datetime.fromisoformat(entry["time"]).timestamp()


class _Recorder:
    name = "ollama/gpu-1"

    def __init__(self) -> None:
        self.applied: list[object] = []

    async def apply(self, change: object, progress: object) -> None:
        self.applied.append(change)


class _Change:
    target, path_text = "ollama/gpu-1", "models.x"


async def test_the_fencing_check_refuses_a_change_once_the_lease_is_not_ours(
        redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        lease = Lease(client, "a", 30.0, key=KEY)
        assert await lease.hold()
        inner = _Recorder()
        fenced = Fenced(inner, lease)  # type: ignore[arg-type]
        await fenced.apply(_Change(), None)  # type: ignore[arg-type]
        assert len(inner.applied) == 1
        await client.set(KEY, "b/1/other")  # another daemon holds it now
        with pytest.raises(TargetError, match="no longer holds the leader lease"):
            await fenced.apply(_Change(), None)  # type: ignore[arg-type]
        await client.set(KEY, lease.token)  # ours in Redis, but our own clock says it ran out
        lease.valid_until = time.monotonic() - 0.001
        with pytest.raises(TargetError):
            await fenced.apply(_Change(), None)  # type: ignore[arg-type]
        assert len(inner.applied) == 1
    finally:
        await client.aclose()


async def test_ollafleet_apply_on_a_cluster_refuses_while_a_daemon_leads(
        tmp_path: Path, redis_server: RedisServer, node: SimNode) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text(daemon_file(redis_server.url, "cli", node, [FIRST]))

    async def apply() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reconciler", "apply", str(file), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        leader = Lease(client, "lb-1", 30.0, key=KEY)
        assert await leader.hold()
        code, err = await apply()
        assert code == 1 and "daemon 'lb-1' holds the leader lease" in err, err
        assert not await _installed(node, FIRST)
        await leader.close()  # the daemon stopped: the lease is free
        code, err = await apply()
        assert code == 0, err
        assert await _installed(node, FIRST)
        assert await client.get(KEY) is None  # apply handed the lease back
    finally:
        await client.aclose()
