"""Alerts reach a webhook: exactly one for a node down, one when it recovers, one for a
rejected save, none for a healthy hour (compressed by a fake clock); a failed delivery is retried."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from reconciler.config.schema import Alerts
from reconciler.daemon.alerts import Alerter
from reconciler.daemon.loop import Daemon
from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.reconciler.daemon.test_service import network, wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Receiver:
    """An incoming webhook on 127.0.0.1 that refuses its first `fail_first` posts with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.texts: list[str] = []
        self.attempts = 0
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        self.texts.append((await request.json())["text"])
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def serve_receiver(rec: Receiver) -> AsyncIterator[str]:
    """A local incoming webhook on a free port; yields its URL (with a token in the path)."""
    app = web.Application()
    app.router.add_post("/hooks/secret-token", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/secret-token"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver(fail_first=1)
    async with serve_receiver(rec) as url:
        yield rec, url


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def test_node_down_recovery_and_rejected_save_alert_once_each(
        sim: Simulator, tmp_path: Path, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    rec, url = receiver
    monkeypatch.setenv("OLLAFLEET_TEST_WEBHOOK", url)
    a = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    b = await sim.add_node("gpu-2", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    alerts = '[alerts]\nwebhook = "${OLLAFLEET_TEST_WEBHOOK}"\nafter = "5m"\n'
    file.write_text(network([a, b], '[models."llama3.2:1b"]\n', extra=alerts))
    clock = Clock()
    svc = Service(file, drain_timeout=2)
    svc.alerter.clock, svc.alerter.retry_delay = clock, 0.05
    assert await svc.start()
    alerter = svc.alerter
    try:
        async def healthy() -> bool:
            last = svc.daemon.last_pass
            return bool(last and last["ok"]) and all(n.reachable for n in svc.balancer.states())  # type: ignore[union-attr]
        await wait_until(healthy)
        for _ in range(60):            # a healthy hour, a minute at a time
            clock.t += 60
            alerter.evaluate()
            await asyncio.sleep(0)
        assert rec.attempts == 0 and alerter.queued() == 0

        b.set_fault("refuse")

        async def seen_down() -> bool:
            return "node:gpu-2" in alerter.open
        await wait_until(seen_down)
        clock.t += 240
        alerter.evaluate()
        assert alerter.queued() == 0, "alerted before `after`"
        clock.t += 61
        for _ in range(20):            # ten more minutes down, with retry passes failing meanwhile
            alerter.evaluate()
            clock.t += 30
            await asyncio.sleep(0.05)

        async def delivered(n: int) -> bool:
            return len(rec.texts) >= n
        await wait_until(lambda: delivered(1))
        assert rec.attempts == 2, "the first post got a 500 and must have been retried"
        async with httpx.AsyncClient(trust_env=False) as client:
            shown = (await client.get(svc.status_url + "/status")).json()["alerts"]
            page = (await client.get(svc.status_url + "/")).text
        assert shown["configured"] == ["webhook"] and any("gpu-2" in t for t in shown["open"])
        assert "<h2>Alerts</h2>" in page and "gpu-2 is unreachable" in page and "secret-token" not in page

        b.clear_fault()

        async def recovered() -> bool:
            return not svc.daemon.targets["ollama/gpu-2"].errors and "node:gpu-2" not in alerter.open
        await wait_until(recovered)
        await wait_until(lambda: delivered(2))

        file.write_text(file.read_text() + "[nodes.oops]\n")
        svc.daemon.request("file change")
        await wait_until(lambda: delivered(3))
        for _ in range(10):
            clock.t += 60
            alerter.evaluate()
        await asyncio.sleep(0.3)
    finally:
        await svc.stop()
    down, back, rejected = rec.texts
    assert "gpu-2 is unreachable" in down and "recovered" not in down
    assert back.startswith("[ollafleet on ") and "recovered: node gpu-2 is unreachable" in back
    assert "rejected" in rejected and "oops" in rejected
    assert "secret-token" not in caplog.text, "the webhook URL is a secret and must not be logged"


async def test_rate_limit_and_command(tmp_path: Path) -> None:
    out = tmp_path / "alerts.txt"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.argv[1] + '\\n')"
    daemon = Daemon(tmp_path / "desired_state.toml")
    clock = Clock()
    alerter = Alerter(daemon, clock=clock, retry_delay=0.05)
    alerter.configure(Alerts(command=[sys.executable, "-c", script], max_per_hour=2))
    for _ in range(3):                 # a file that flaps: rejected, fixed, rejected, ...
        daemon.file_errors = ["bad"]
        alerter.evaluate()
        daemon.file_errors = []
        alerter.evaluate()
        clock.t += 60
    assert alerter.queued() == 2 and alerter.suppressed == 4
    clock.t += 3600
    daemon.file_errors = ["bad"]
    alerter.evaluate()
    stop = asyncio.Event()
    task = asyncio.create_task(alerter.run(stop, every=0.05))
    try:
        async def all_sent() -> bool:
            return len(alerter.delivered) == 3
        await wait_until(all_sent)
    finally:
        stop.set()
        await task
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and "recovered" in lines[1]
    assert "4 earlier alert(s) were not sent" in lines[2]


@contextlib.asynccontextmanager
async def trickling_webhook(posts: list[int]) -> AsyncIterator[str]:
    """A webhook that accepts the post, then answers one byte at a time, for ever (each byte
    arrives well within any per-read timeout)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        posts.append(1)
        writers.append(writer)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while True:
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks/slow"
    finally:
        server.close()
        for writer in writers:      # ends each handler's loop at its next write
            writer.close()
        await server.wait_closed()


async def test_a_trickling_webhook_holds_neither_the_command_nor_the_truth(tmp_path: Path) -> None:
    out = tmp_path / "alerts.txt"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.argv[1] + '\\n')"
    daemon = Daemon(tmp_path / "desired_state.toml")
    posts: list[int] = []
    async with trickling_webhook(posts) as url:
        from reconciler.config.values import Secret

        alerter = Alerter(daemon, clock=Clock(), retry_delay=0.05, deadline=1.0)
        alerter.configure(Alerts(webhook=Secret("HOOK", url), command=[sys.executable, "-c", script]))
        stop = asyncio.Event()
        task = asyncio.create_task(alerter.run(stop, every=0.05))
        try:
            daemon.file_errors = ["bad"]            # an alert at once

            async def commanded() -> bool:
                return out.exists() and "rejected" in out.read_text()
            await wait_until(commanded)             # the command got it, whatever the webhook does

            async def shown_failing() -> bool:
                view = alerter.view()
                return bool(view["delivery_failing"]) and view["failing_channels"] == ["webhook"]
            await wait_until(shown_failing)         # the webhook's attempt ended at its deadline

            async def retried() -> bool:
                return len(posts) >= 2
            await wait_until(retried)
        finally:
            stop.set()
            await task
    assert alerter.view()["undelivered"] == 1      # the webhook's, still to be retried


async def test_a_node_that_comes_back_raises_no_alert_about_the_pass_from_before(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Receiver()
    a = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    b = await sim.add_node("gpu-2", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    alerts = '[alerts]\nwebhook = "${OLLAFLEET_TEST_WEBHOOK}"\nafter = "3s"\n'
    text = network([a, b], '[models."llama3.2:1b"]\n', extra=alerts, interval="1h")
    file.write_text(text.replace('retry_interval = "1s"', 'retry_interval = "1h"'))   # passes only on request
    clock = Clock()
    async with serve_receiver(rec) as url:
        monkeypatch.setenv("OLLAFLEET_TEST_WEBHOOK", url)
        svc = Service(file, drain_timeout=2)
        svc.alerter.clock, svc.alerter.retry_delay = clock, 0.05
        assert await svc.start()
        alerter, balancer = svc.alerter, svc.balancer
        assert balancer is not None
        try:
            async def reachable(want: bool) -> bool:
                return [n.reachable for n in balancer.states() if n.name == "gpu-2"] == [want]

            async def passed(ok: bool) -> bool:
                target = svc.daemon.targets.get("ollama/gpu-2")
                return target is not None and (not target.errors) == ok and not svc.daemon.running_pass

            async def delivered(n: int) -> bool:
                return len(rec.texts) >= n
            await wait_until(lambda: passed(True))
            b.set_fault("refuse")
            await wait_until(lambda: reachable(False))
            svc.daemon.request("test")                 # a pass fails on gpu-2 while it is down
            await wait_until(lambda: passed(False))
            alerter.evaluate()
            clock.t += 4
            alerter.evaluate()
            await wait_until(lambda: delivered(1))    # "node gpu-2 is unreachable"

            b.clear_fault()
            await wait_until(lambda: reachable(True))
            for _ in range(10):                        # back, and no pass since: 20 s of evaluations
                alerter.evaluate()
                clock.t += 2
                await asyncio.sleep(0.02)
            await wait_until(lambda: delivered(2))    # "recovered"
            svc.daemon.request("test")                 # the next pass finds gpu-2 fine
            await wait_until(lambda: passed(True))
            for _ in range(5):
                alerter.evaluate()
                clock.t += 2
            await asyncio.sleep(0.3)
        finally:
            await svc.stop()
    assert len(rec.texts) == 2, rec.texts
    down, back = rec.texts
    assert "gpu-2 is unreachable" in down and "recovered: node gpu-2 is unreachable" in back


async def test_a_verify_that_finds_problems_alerts_once_and_recovers_once(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[reconcile] verify on simulated nodes and the daemon's own balancer: gpu-2, the only node
    declared for llama3.1:8b, refuses, so after the pass that pulls llama3.2:1b onto gpu-1 the
    balancer lists llama3.1 on no node. One alert after `after` names it; when gpu-2 is back, the
    daemon checks again (no pass changes anything then) and one recovery follows."""
    rec = Receiver()
    async with serve_receiver(rec) as url:
        monkeypatch.setenv("OLLAFLEET_TEST_WEBHOOK", url)
        a = await sim.add_node("gpu-1", timing=Timing.instant())
        b = await sim.add_node("gpu-2", models=["llama3.1:8b"], timing=Timing.instant())
        b.set_fault("refuse")
        file = tmp_path / "desired_state.toml"
        extra = 'verify = true\n[alerts]\nwebhook = "${OLLAFLEET_TEST_WEBHOOK}"\nafter = "5m"\n'
        file.write_text(network([a, b], '[models."llama3.2:1b"]\nnodes = ["gpu-1"]\n'
                                        '[models."llama3.1:8b"]\nnodes = ["gpu-2"]\n', extra=extra, interval="1s"))
        clock = Clock()
        svc = Service(file, drain_timeout=2)
        svc.alerter.clock, svc.alerter.retry_delay = clock, 0.05
        assert await svc.start()
        alerter = svc.alerter
        try:
            async def verify_failed() -> bool:
                v = svc.daemon.verified
                return bool(v and not v["ok"] and any("llama3.1:8b" in p for p in v["problems"]))
            await wait_until(verify_failed, 30)
            alerter.evaluate()
            assert "verify" in alerter.open and not alerter.open["verify"].sent, "alerted before `after`"
            clock.t += 301
            for _ in range(5):          # looked at again and again: still one alert
                alerter.evaluate()
                clock.t += 60

            def verify_alerts() -> list[str]:
                return [t for t in rec.texts if "verify:" in t]

            async def delivered(n: int) -> bool:
                return len(verify_alerts()) >= n
            await wait_until(lambda: delivered(1))
            b.clear_fault()

            async def verify_passed() -> bool:
                v = svc.daemon.verified
                return bool(v and v["ok"])
            await wait_until(verify_passed, 30)
            await wait_until(lambda: delivered(2))
            for _ in range(5):
                alerter.evaluate()
                clock.t += 60
            await asyncio.sleep(0.3)
        finally:
            await svc.stop()
    alert, back = verify_alerts()
    assert "recovered" not in alert and 'models."llama3.1:8b"' in alert and "lists it on no node" in alert
    assert "(since " in alert
    assert back.startswith("[ollafleet on ") and "recovered: verify:" in back
