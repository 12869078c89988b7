"""What a pass hands the balancer, and what it leaves to it: a model the pass pulled answers
through the balancer as soon as the pass reports ok (no wait for the next poll); loading and
pinning are not the pass's, so traffic that evicts a pinned model is not drift."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from reconciler import cli
from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.openwebui_harness import free_port

SMALL = "all-minilm:22m"


def text(urls: list[str], models: str, poll: str = "30s", port: int = 0) -> str:
    out = (f'version = 1\n[balancer]\nlisten = "127.0.0.1:{port}"\npoll_interval = "{poll}"\nqueue_timeout = "5s"\n'
           '[reconcile]\ninterval = "60s"\nstatus_listen = "127.0.0.1:0"\n')
    out += "".join(f'[[nodes]]\nname = "gpu-{i}"\nurl = "{u}"\n' for i, u in enumerate(urls, 1))
    return out + models


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def converged(svc: Service) -> bool:
    last = svc.daemon.last_pass
    return bool(last and last["ok"] and last["changes"] and last["applied"] == last["changes"])


async def test_a_model_the_pass_pulled_answers_through_the_balancer_when_the_pass_is_ok(tmp_path: Path) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant())
        file = tmp_path / "desired_state.toml"
        file.write_text(text([node.url], f'[models."{SMALL}"]\n'))
        svc = Service(file, drain_timeout=1)      # polls every 30 s: only the hand-off can tell it
        assert await svc.start()
        assert svc.balancer is not None
        try:
            await until(lambda: converged(svc))
            async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=10) as client:
                for model in (SMALL, "all-minilm:22M"):
                    r = await client.post("/api/embed", json={"model": model, "input": "hi"})
                    assert r.status_code == 200, (model, r.text)
        finally:
            await svc.stop()


PINNED = """[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
params = { num_ctx = 30000 }
[models."qwq:32b"]
"""


async def test_traffic_that_evicts_a_pinned_model_is_not_drift(tmp_path: Path) -> None:
    """Three one-GPU nodes, two models: people's qwq chats evict the pinned codestral. The passes
    that follow plan nothing and load nothing, and `plan --detailed-exitcode` exits 0."""
    async with Simulator() as sim:
        nodes = [await sim.add_node(f"gpu-{i}", timing=Timing.instant(), max_loaded=1) for i in (1, 2, 3)]
        file = tmp_path / "desired_state.toml"
        file.write_text(text([n.url for n in nodes], PINNED, poll="0.5s"))
        svc = Service(file, drain_timeout=1)
        assert await svc.start()
        assert svc.balancer is not None
        try:
            await until(lambda: converged(svc))
            chat = {"messages": [{"role": "user", "content": "hi"}], "stream": False}
            async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
                for model in ["codestral:22b"] * 3 + ["qwq:32b"] * 6 + ["codestral:22b", "qwq:32b"] * 3:
                    r = await client.post("/api/chat", json={"model": model, **chat})
                    assert r.status_code == 200, r.text
            assert any(n.loaded_models() == ["qwq:32b"] for n in nodes)     # codestral evicted there
            for n in nodes:
                n.clear_requests()
            report = await svc.daemon.run_pass("test")
            assert report is not None and report.plan.changes == () and report.ok
            assert [r for n in nodes for r in n.requests if r.is_load_call() or r.path in ("/api/chat", "/api/generate")] == []
            assert await asyncio.to_thread(cli.main, ["plan", "--detailed-exitcode", str(file)]) == 0
        finally:
            await svc.stop()


async def test_verify_names_a_declared_model_the_balancer_does_not_serve(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant())
        file = tmp_path / "desired_state.toml"
        file.write_text(text([node.url], PINNED, poll="0.5s", port=free_port()))
        svc = Service(file, drain_timeout=1)
        assert await svc.start()
        try:
            await until(lambda: converged(svc))
            assert await asyncio.to_thread(cli.main, ["verify", str(file), "--chat"]) == 0
            assert "verify: ok" in capsys.readouterr().out
            file.write_text(file.read_text() + f'[models."{SMALL}"]\n')   # an embedding model: checked by an embedding
            await svc.daemon.file_changed()
            await until(lambda: SMALL in node.installed_models())
            assert await asyncio.to_thread(cli.main, ["verify", str(file), "--chat"]) == 0, capsys.readouterr().out
            capsys.readouterr()
            other = tmp_path / "other.toml"     # the same network, one model more than it serves
            other.write_text(file.read_text() + '[models."gemma3:1b"]\n')
            assert await asyncio.to_thread(cli.main, ["verify", str(other)]) == 1
            out = capsys.readouterr().out
            assert out.splitlines() == ['models."gemma3:1b": the balancer (' + svc.daemon.state.balancer_public_url()
                                        + ") lists it on no node"]
        finally:
            await svc.stop()


async def test_plan_says_where_the_running_daemon_balances_otherwise_than_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant())
        file = tmp_path / "desired_state.toml"
        status = f"127.0.0.1:{free_port()}"
        file.write_text(text([node.url], '[models."qwq:32b"]\n').replace(
            'status_listen = "127.0.0.1:0"', f'status_listen = "{status}"'))
        svc = Service(file, drain_timeout=1)
        assert await svc.start()
        try:
            await until(lambda: converged(svc))
            other = tmp_path / "imported.toml"     # as `import` without --daemon writes it
            other.write_text(file.read_text().replace('queue_timeout = "5s"', 'queue_timeout = "0s"\n'
                                                      'apply_model_params = "off"'))
            assert await asyncio.to_thread(cli.main, ["plan", "--detailed-exitcode", str(other)]) == 0
            out = capsys.readouterr().out
            assert f"the running daemon ({status}) uses [balancer] queue_timeout = '5s', this file says '0ms'" in out
            assert "apply_model_params = 'fill', this file says 'off'" in out
            assert await asyncio.to_thread(cli.main, ["plan", str(file)]) == 0
            assert "the running daemon" not in capsys.readouterr().out
        finally:
            await svc.stop()
