"""The seed topology end to end: a real Open WebUI → the daemon's balancer → three simulated
GPU PCs that start empty. The daemon pulls the models, configures Open WebUI, a user's chat
streams back with the seed's parameters, and drift in Open WebUI is corrected on the interval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.openwebui_harness import OpenWebUI, free_port, start_openwebui

pytestmark = pytest.mark.openwebui
ADMIN = ("admin@example.com", "Adm1n-pass!")


def seed_file(nodes: list[str], port: int, owui: str) -> str:
    text = f"""version = 1
[balancer]
listen = "127.0.0.1:{port}"
poll_interval = "0.5s"
queue_timeout = "5s"
[reconcile]
interval = "2s"
retry_interval = "1s"
status_listen = "127.0.0.1:0"
"""
    for i, url in enumerate(nodes, 1):
        text += f'[[nodes]]\nname = "gpu-{i}"\nurl = "{url}"\n'
    return text + f"""
[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
visibility = "public"
capabilities = {{ vision = false, citations = false }}
params = {{ num_ctx = 30000, num_predict = 29000, temperature = 0.1, top_p = 0.95, repeat_penalty = 1.15 }}
[models."qwq:32b".openwebui]
visibility = "public"
capabilities = {{ vision = false, citations = false }}
params = {{ num_ctx = 14000, num_predict = 13000 }}
[openwebui]
url = "{owui}"
admin_email = "${{E2E_OWUI_EMAIL}}"
admin_password = "${{E2E_OWUI_PASSWORD}}"
task_model = "codestral:22b"
code_interpreter = false
code_execution = {{ enabled = true, engine = "pyodide" }}
default_user_role = "user"
enable_signup = true
openai_api = false
"""


@pytest.fixture(scope="module")
def owui() -> AsyncIterator[OpenWebUI]:
    instance = start_openwebui("http://127.0.0.1:9", admin=ADMIN)   # the daemon sets the real URL
    yield instance  # type: ignore[misc]
    instance.stop()


async def eventually(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.2)
    await asyncio.wait_for(loop(), timeout)


async def test_seed_network_end_to_end(owui: OpenWebUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_OWUI_EMAIL", ADMIN[0])
    monkeypatch.setenv("E2E_OWUI_PASSWORD", ADMIN[1])
    async with Simulator() as sim:
        nodes = [await sim.add_node(f"gpu-{i}", timing=Timing.instant()) for i in (1, 2, 3)]
        file = tmp_path / "desired_state.toml"
        file.write_text(seed_file([n.url for n in nodes], free_port(), owui.url))
        svc = Service(file, drain_timeout=5)
        assert await svc.start()
        try:
            await _check(svc, nodes, owui)
        finally:
            await svc.stop()


async def _check(svc: Service, nodes: list, owui: OpenWebUI) -> None:  # type: ignore[type-arg]
    async def converged() -> bool:
        last = svc.daemon.last_pass
        return bool(last and last["ok"] and last["changes"] == 0)
    await eventually(converged, 120)
    for node in nodes:
        assert sorted(node.installed_models()) == ["codestral:22b", "codestral:22b-v1", "qwq:32b", "qwq:32b-v1"]

    async with httpx.AsyncClient(base_url=owui.url, timeout=60) as client:
        token = (await client.post("/api/v1/auths/signin", json={"email": ADMIN[0], "password": ADMIN[1]})).json()["token"]
        admin = {"Authorization": f"Bearer {token}"}
        ollama = (await client.get("/ollama/config", headers=admin)).json()
        assert ollama["OLLAMA_BASE_URLS"] == [svc.daemon.state.balancer_public_url()]  # type: ignore[union-attr]
        assert (await client.get("/api/v1/tasks/config", headers=admin)).json()["TASK_MODEL"] == "codestral:22b"

        # an employee signs up and chats; the answer streams back through the balancer
        user = (await client.post("/api/v1/auths/signup", json={
            "name": "Dana", "email": "dana@example.com", "password": "Dana-pass-1"})).json()
        assert user["role"] == "user"
        headers = {"Authorization": f"Bearer {user['token']}"}
        models = (await client.get("/api/models", headers=headers)).json()["data"]
        assert sorted(m["id"] for m in models) == ["codestral:22b", "qwq:32b"]
        for node in nodes:
            node.clear_requests()
        chunks = []
        body = {"model": "codestral:22b", "stream": True, "messages": [{"role": "user", "content": "Write hello world"}]}
        async with client.stream("POST", "/api/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:]))
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text.startswith("Simulated answer from gpu-")
        chats = [r for n in nodes for r in n.requests if r.path == "/api/chat"]
        assert len(chats) == 1
        options = chats[0].body["options"]
        assert {k: options[k] for k in ("num_ctx", "num_predict", "temperature", "top_p", "repeat_penalty")} == {
            "num_ctx": 30000, "num_predict": 29000, "temperature": 0.1, "top_p": 0.95, "repeat_penalty": 1.15}

        # drift behind the daemon's back: corrected by the next interval
        tasks = (await client.get("/api/v1/tasks/config", headers=admin)).json()
        tasks["TASK_MODEL"] = "qwq:32b"
        assert (await client.post("/api/v1/tasks/config/update", json=tasks, headers=admin)).status_code == 200

        async def restored() -> bool:
            now = (await client.get("/api/v1/tasks/config", headers=admin)).json()
            return bool(now["TASK_MODEL"] == "codestral:22b")
        await eventually(restored, 30)
        # and drift on a node: a model deleted by hand comes back
        await httpx.AsyncClient().request("DELETE", nodes[1].url + "/api/delete", json={"model": "qwq:32b"})

        async def pulled_again() -> bool:
            return "qwq:32b" in nodes[1].installed_models()
        await eventually(pulled_again, 30)
