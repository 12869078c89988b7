"""The daemon as a whole, in-process, against simulated nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, SimNode, Timing


def network(nodes: list[SimNode], models: str, extra: str = "", interval: str = "60s") -> str:
    text = ('version = 1\n[balancer]\nlisten = "127.0.0.1:0"\nsilence_timeout = "5s"\npoll_interval = "0.2s"\n'
            f'[reconcile]\ninterval = "{interval}"\nretry_interval = "1s"\nstatus_listen = "127.0.0.1:0"\n{extra}')
    for node in nodes:
        text += f'[[nodes]]\nname = "{node.name}"\nurl = "{node.url}"\n'
    return text + models


async def wait_until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def status(svc: Service) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient() as client:
        return (await client.get(svc.status_url + "/status")).json()


async def test_file_edit_is_applied_and_status_shows_the_new_revision(sim: Simulator, tmp_path: Path) -> None:
    a = await sim.add_node("gpu-1", timing=Timing.instant())
    b = await sim.add_node("gpu-2", timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([a, b], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        async def converged() -> bool:
            return a.installed_models() == ["llama3.2:1b"] and b.installed_models() == ["llama3.2:1b"]
        await wait_until(converged)
        first = (await status(svc))["revision"]["sha256"]
        # an editor's atomic save: write elsewhere, rename over the file
        new = tmp_path / "tmp.toml"
        new.write_text(network([a, b], '[models."llama3.2:1b"]\n[models."qwq:32b"]\nnodes = ["gpu-2"]\n'))
        new.replace(file)

        async def second() -> bool:
            return "qwq:32b" in b.installed_models()
        await wait_until(second)
        await wait_until(lambda: _passes_done(svc))
        data = await status(svc)
        assert data["revision"]["sha256"] != first and data["file_errors"] == []
        assert "qwq:32b" not in a.installed_models()
        assert {n["name"] for n in data["balancer"]["nodes"]} == {"gpu-1", "gpu-2"}
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(svc.status_url + "/metrics")).text
        assert "ollafleet_reconcile_passes_total" in metrics and "ollafleet_balancer_requests_total" in metrics
        assert 'ollafleet_balancer_first_token_seconds_bucket{le="+Inf"}' in metrics
        assert "ollafleet_balancer_queue_wait_seconds_count" in metrics
        assert "ollafleet_balancer_model_loads_total" in metrics
        assert "ollafleet_balancer_warmer_loads_total" in metrics
        assert all({"runner_model", "queued", "learned", "warming"} <= set(n)
                   for n in data["balancer"]["nodes"])
    finally:
        await svc.stop()


async def _passes_done(svc: Service) -> bool:
    return not svc.daemon.running_pass


async def test_drift_is_corrected_on_the_interval(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n', interval="0.5s"))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        await wait_until(lambda: _passes_done(svc))
        async with httpx.AsyncClient() as client:   # someone deletes the model by hand
            await client.request("DELETE", node.url + "/api/delete", json={"model": "llama3.2:1b"})
        assert node.installed_models() == []

        async def restored() -> bool:
            return node.installed_models() == ["llama3.2:1b"]
        await wait_until(restored)
    finally:
        await svc.stop()


async def test_broken_save_changes_nothing_balancer_serves_next_good_save_applies(
        sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        await wait_until(lambda: _passes_done(svc))
        good = (await status(svc))["revision"]["sha256"]
        node.clear_requests()
        file.write_text(network([node], '[models."llama3.2:1b"]\n[models."qwq:32b"]\nkeep_loded = true\n'))

        async def rejected() -> bool:
            return bool((await status(svc))["file_errors"])
        await wait_until(rejected)
        data = await status(svc)
        assert data["revision"]["sha256"] == good
        assert 'keep_loded: unknown key (did you mean "keep_loaded"?)' in data["file_errors"][0]
        assert node.write_requests() == []
        assert svc.balancer is not None
        async with httpx.AsyncClient() as client:
            r = await client.post(svc.balancer.url + "/api/generate",
                                  json={"model": "llama3.2:1b", "prompt": "hi", "stream": False})
            assert r.status_code == 200 and r.json()["done"] is True
        file.write_text(network([node], '[models."llama3.2:1b"]\n[models."qwq:32b"]\n'))

        async def applied() -> bool:
            return "qwq:32b" in node.installed_models()
        await wait_until(applied)
    finally:
        await svc.stop()


async def test_stream_survives_a_reload_that_adds_and_removes_nodes(sim: Simulator, tmp_path: Path) -> None:
    slow = Timing(time_scale=1.0, gen_tps=30.0, load_delay=0.0)
    a = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=slow)
    a.reply_tokens = 90   # a 3 s answer
    b = await sim.add_node("gpu-2", models=["llama3.2:1b"], timing=slow)
    file = tmp_path / "desired_state.toml"
    file.write_text(network([a], '[models."llama3.2:1b"]\n'))
    svc = Service(file, drain_timeout=5)
    assert await svc.start()
    try:
        await wait_until(lambda: _passes_done(svc))
        assert svc.balancer is not None
        lines: list[dict] = []  # type: ignore[type-arg]
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "llama3.2:1b", "prompt": "count"}
            nodes_at_end: list[str] = []
            async with client.stream("POST", svc.balancer.url + "/api/generate", json=body) as r:
                async for line in r.aiter_lines():
                    lines.append(json.loads(line))
                    if len(lines) == 3:   # mid-stream: gpu-1 leaves the file, gpu-2 joins
                        file.write_text(network([b], '[models."llama3.2:1b"]\n'))
                    if lines[-1]["done"]:
                        nodes_at_end = [n.name for n in svc.balancer.states()]
        assert lines[-1]["done"] is True and len(lines) == 91
        assert "gpu-2" in nodes_at_end   # the reload happened while the stream ran
        assert a.requests[-1].client_disconnected is False

        async def swapped() -> bool:
            return [n.name for n in svc.balancer.states()] == ["gpu-2"]  # type: ignore[union-attr]
        await wait_until(swapped)
    finally:
        await svc.stop()
