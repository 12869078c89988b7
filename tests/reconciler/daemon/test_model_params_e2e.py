"""Issue 13's "done when": the seed file applied by the daemon to simulated nodes, then 20 chats
in Open WebUI's request shape, 20 /v1/chat/completions without parameters and 20 requests with
keep_alive "5m" through the daemon's balancer: no reload after the first load, the pinned runner
keeps expires_at forever and context 30000, and every request ran with the declared values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from simulator.gofmt import FOREVER_NS
from tests.openwebui_harness import free_port

DECLARED = {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1, "top_p": 0.95, "repeat_penalty": 1.15}
SAMPLING = ("temperature", "top_p", "repeat_penalty", "num_predict")
MSGS = [{"role": "user", "content": "Write hello world"}]


def seed_file(nodes: list[str], port: int, mode: str = "fill") -> str:
    text = f"""version = 1
[balancer]
listen = "127.0.0.1:{port}"
poll_interval = "0.5s"
queue_timeout = "5s"
apply_model_params = "{mode}"
[reconcile]
interval = "60s"
retry_interval = "1s"
status_listen = "127.0.0.1:0"
"""
    for i, url in enumerate(nodes, 1):
        text += f'[[nodes]]\nname = "gpu-{i}"\nurl = "{url}"\n'
    return text + """
[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
visibility = "public"
params = { num_ctx = 30000, num_predict = 29000, temperature = 0.1, top_p = 0.95, repeat_penalty = 1.15 }
[models."qwq:32b".openwebui]
params = { num_ctx = 14000, num_predict = 13000 }
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Service, list[Any]]]:
    async with Simulator() as sim:
        nodes = [await sim.add_node(f"gpu-{i}", timing=Timing.instant()) for i in (1, 2)]
        file = tmp_path / "desired_state.toml"
        file.write_text(seed_file([n.url for n in nodes], free_port()))
        svc = Service(file, drain_timeout=2)
        assert await svc.start()
        try:
            async def converged() -> None:
                while not ((last := svc.daemon.last_pass) and last["ok"] and last["applied"] == last["changes"]):
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(converged(), 60)
            assert svc.balancer is not None
            await svc.balancer.refresh()
            yield svc, nodes
        finally:
            await svc.stop()


def runners(nodes: list[Any]) -> dict[str, Any]:
    [weights] = {m.weights for n in nodes for m in n.state.models.values() if m.name.short == "codestral:22b"}
    return {n.name: n.state.runners[weights] for n in nodes if weights in n.state.runners}


async def first_loads(svc: Service, nodes: list[Any]) -> dict[str, Any]:
    """Chats two at a time until codestral runs on every node (the pass loads nothing itself)."""
    assert svc.balancer is not None
    body = {"model": "codestral:22b", "messages": MSGS, "stream": False}
    async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
        for _ in range(20):
            if len(runners(nodes)) == len(nodes):
                break
            await asyncio.gather(*(client.post("/api/chat", json=body) for _ in nodes))
    pinned = runners(nodes)
    assert len(pinned) == len(nodes)
    return pinned


async def test_no_reload_and_declared_values_for_every_client(daemon: tuple[Service, list[Any]]) -> None:
    svc, nodes = daemon
    assert svc.balancer is not None
    pinned = await first_loads(svc, nodes)      # loaded by the balancer's requests, one per node
    for runner in pinned.values():
        assert runner.num_ctx == 30000 and runner.keep_alive_ns >= FOREVER_NS

    openwebui = {"model": "codestral:22b", "messages": MSGS, "stream": True, "options": dict(DECLARED)}
    v1 = {"model": "codestral:22b", "messages": MSGS}
    keep = {"model": "codestral:22b", "prompt": "def f(", "stream": False, "keep_alive": "5m"}
    sent = [("/api/chat", openwebui)] * 20 + [("/v1/chat/completions", v1)] * 20 + [("/api/generate", keep)] * 20
    async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
        for path, body in sent:
            for n in nodes:
                n.last_options = {}
            r = await client.post(path, json=body)
            assert r.status_code == 200, r.text
            [ran] = [n.last_options for n in nodes if n.last_options]
            assert {k: ran.get(k) for k in SAMPLING} == {k: DECLARED[k] for k in SAMPLING}, path
    assert runners(nodes) == pinned and all(a is b for a, b in zip(runners(nodes).values(), pinned.values()))
    for node in nodes:
        async with httpx.AsyncClient(base_url=node.url) as client:
            [ps] = [m for m in (await client.get("/api/ps")).json()["models"] if m["name"].startswith("codestral")]
        assert ps["context_length"] == 30000 and int(ps["expires_at"][:4]) > 2200
    # every request was spread over the nodes, and each node's /v1 traffic used the -v1 model
    served = [r for n in nodes for r in n.requests if r.path == "/v1/chat/completions"]
    assert len(served) == 20 and {r.body["model"] for r in served} == {"codestral:22b-v1"}


async def test_the_v1_helper_models_are_in_no_model_list(daemon: tuple[Service, list[Any]]) -> None:
    """People pick models from /api/tags (Open WebUI) and /v1/models: the -v1 helpers are
    ollafleet's own, so they are left out, and /v1 requests still reach them."""
    svc, nodes = daemon
    assert svc.balancer is not None
    assert any(m.endswith("-v1") for m in nodes[0].installed_models())
    async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=30) as client:
        tags = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
        listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        r = await client.post("/v1/chat/completions", json={"model": "qwq:32b", "messages": MSGS})
    assert sorted(tags) == sorted(listed) == ["codestral:22b", "qwq:32b"]
    assert r.status_code == 200
    assert [r.body["model"] for n in nodes for r in n.requests if r.path == "/v1/chat/completions"] == ["qwq:32b-v1"]


async def test_official_clients_without_parameters_get_the_declared_values(
        daemon: tuple[Service, list[Any]]) -> None:
    import ollama
    import openai

    svc, nodes = daemon
    assert svc.balancer is not None
    pinned = await first_loads(svc, nodes)
    for n in nodes:
        n.last_options = {}
    oa = openai.AsyncOpenAI(base_url=svc.balancer.url + "/v1", api_key="unused", max_retries=0)
    answer = await oa.chat.completions.create(model="codestral:22b", messages=[{"role": "user", "content": "hi"}])
    await oa.close()
    assert (answer.choices[0].message.content or "").startswith("Simulated answer from gpu-")
    [ran] = [n.last_options for n in nodes if n.last_options]
    assert {k: ran.get(k) for k in SAMPLING} == {k: DECLARED[k] for k in SAMPLING}
    for n in nodes:
        n.last_options = {}
    native = ollama.AsyncClient(host=svc.balancer.url)
    reply = await native.chat(model="codestral:22b", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content and reply.message.content.startswith("Simulated answer from gpu-")
    [ran] = [n.last_options for n in nodes if n.last_options]
    assert {k: ran.get(k) for k in (*SAMPLING, "num_ctx")} == DECLARED
    assert all(a is b for a, b in zip(runners(nodes).values(), pinned.values()))   # no reload
