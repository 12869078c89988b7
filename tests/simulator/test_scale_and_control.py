"""100 nodes in one process, the threaded facade, the control endpoint and the command line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from simulator import Fault, Simulator, SimulatorThread, Timing
from simulator.control import start_control

ROOT = Path(__file__).resolve().parents[2]


async def test_hundred_nodes_start_and_answer(sim: Simulator) -> None:
    t0 = time.monotonic()
    nodes = await sim.add_nodes(100, timing=Timing.instant(), models=["codestral:22b"])
    started = time.monotonic() - t0
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=20) as c:
        replies = await asyncio.gather(*(c.get(n.url + "/api/version") for n in nodes))
    total = time.monotonic() - t0
    print(f"\n100 nodes started in {started:.2f} s; all answered /api/version after {total:.2f} s")
    assert [r.json() for r in replies] == [{"version": "0.13.5"}] * 100
    assert len({n.port for n in nodes}) == 100


def test_simulator_thread_for_synchronous_code() -> None:
    before = set(threading.enumerate())
    with SimulatorThread() as sim:
        node = sim.add_node(name="gpu-1", models=["codestral:22b"], timing=Timing.instant())
        assert httpx.get(node.url + "/api/tags").json()["models"][0]["name"] == "codestral:22b"
        node.set_fault(Fault.HTTP_500)                    # from this (non-loop) thread
        assert httpx.post(node.url + "/api/chat", json={"model": "codestral:22b", "messages": [
            {"role": "user", "content": "a"}]}).status_code == 500
        node.clear_fault()
        node.install("qwq:32b")
        assert sim.call(asyncio.sleep, 0, "done") == "done"
        assert sim.wait_for(lambda: node.installed_models(), timeout=1)
        assert set(node.installed_models()) == {"codestral:22b", "qwq:32b"}
        url = node.url
        sim.remove_node(node)
        try:
            httpx.get(url + "/api/version", timeout=1)
            raise AssertionError("node still answers after removal")
        except httpx.TransportError:
            pass
    # its own thread is gone (other tests' session simulators may still run)
    assert not [t for t in set(threading.enumerate()) - before if t.name == "ollama-simulator"]


async def test_control_endpoint(sim: Simulator) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"], timing=Timing.instant())
    runner = await start_control(sim, 0)
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            listed = (await c.get("/nodes")).json()
            assert listed[0]["name"] == "gpu-1" and listed[0]["url"] == node.url
            async with httpx.AsyncClient() as n:
                await n.post(node.url + "/api/generate", json={"model": "codestral:22b"})
            assert (await c.get("/nodes")).json()[0]["loads"] == 1
            r = await c.post("/nodes/gpu-1/fault", json={"fault": "http_503_busy"})
            assert r.json()["fault"] == "http_503_busy" and node.fault_state.fault is Fault.HTTP_503_BUSY
            assert (await c.post("/nodes/gpu-1/fault", json={"fault": "bogus"})).status_code == 400
            assert (await c.delete("/nodes/gpu-1/fault")).json()["fault"] == "none"
            assert (await c.post("/nodes/nope/fault", json={"fault": "refuse"})).status_code == 404
            await c.post("/nodes/gpu-1/registry", json={"online": False})
            assert node.registry_online is False
            async with httpx.AsyncClient() as n:
                await n.get(node.url + "/api/tags")
            log = (await c.get("/nodes/gpu-1/requests")).json()
            assert log[-1]["path"] == "/api/tags" and log[-1]["status"] == 200
    finally:
        await runner.cleanup()


def test_command_line_runs_nodes_people_can_curl() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--nodes", "2", "--port", "0",
                             "--models", "codestral:22b,qwq:32b", "--timing", "fast"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[1] for _ in range(2)]
        control = proc.stdout.readline().split()[1]
        tags = httpx.get(urls[1] + "/api/tags", timeout=5).json()
        assert sorted(m["name"] for m in tags["models"]) == ["codestral:22b", "qwq:32b"]
        assert [n["name"] for n in httpx.get(control, timeout=5).json()] == ["sim-1", "sim-2"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_public_api_is_pinned() -> None:
    import simulator
    assert sorted(simulator.__all__) == ["CATALOGUE", "Catalogue", "CatalogueModel", "Fault", "RecordedRequest",
                                         "SimNode", "Simulator", "SimulatorThread", "Timing", "build_catalogue"]
    assert {"codestral:22b", "qwq:32b", "llama3.2:1b", "qwen2.5-coder:32b", "nomic-embed-text:latest",
            "llava:latest"} <= set(simulator.CATALOGUE)
    assert [f.name for f in simulator.Fault] == [
        "NONE", "REFUSE", "NO_ANSWER", "HANG_AFTER_HEADERS", "FAIL_MID_STREAM", "RST_MID_STREAM",
        "FIN_MID_STREAM", "SLOW_TOKENS", "HTTP_500", "HTTP_503_BUSY", "MODEL_NOT_FOUND", "FREEZE", "DISK_FULL"]


def test_cli_time_scale_and_multiuser_cache() -> None:
    """`python -m simulator --timing realistic --time-scale 0.001`: realistic reported
    durations, a 100x-faster-than-real load; --multiuser-cache reaches the node."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--nodes", "1", "--port", "0",
                             "--models", "qwq:32b", "--timing", "realistic", "--time-scale",
                             "0.001", "--multiuser-cache", "--control-port", "-1"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            found = re.match(r"sim-1\s+(http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        started = time.monotonic()
        r = httpx.post(url + "/api/generate", json={"model": "qwq:32b"}, timeout=10)
        assert r.json()["done_reason"] == "load" and time.monotonic() - started < 1.2
        r = httpx.post(url + "/api/generate", json={"model": "qwq:32b", "prompt": "hi",
                                                    "stream": False}, timeout=10)
        assert r.json()["eval_count"] / r.json()["eval_duration"] * 1e9 == pytest.approx(30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
