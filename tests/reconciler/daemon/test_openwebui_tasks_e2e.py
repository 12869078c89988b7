"""Open WebUI's background task requests end to end: a real Open WebUI → the daemon's balancer →
three simulated GPU PCs. An employee chats with qwq; Open WebUI's title, tags and follow-up
requests (built by Open WebUI itself, from its own templates) go to codestral, the task model,
on a node that holds it, and load no model."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from reconciler.daemon.run import Service
from reconciler.status_cli import print_status
from simulator import Simulator, Timing
from tests.openwebui_harness import OpenWebUI, free_port, start_openwebui

pytestmark = pytest.mark.openwebui
ADMIN = ("admin@example.com", "Adm1n-pass!")
CODE, QWQ = "codestral:22b", "qwq:32b"


def tasks_file(nodes: list[str], port: int, owui: str) -> str:
    text = f"""version = 1
[balancer]
listen = "127.0.0.1:{port}"
poll_interval = "0.5s"
queue_timeout = "30s"
task_timeout = "20s"
[reconcile]
interval = "2s"
retry_interval = "1s"
status_listen = "127.0.0.1:0"
"""
    for i, url in enumerate(nodes, 1):
        text += f'[[nodes]]\nname = "gpu-{i}"\nurl = "{url}"\n'
    return text + f"""
[models."{CODE}"]
keep_loaded = true
[models."{CODE}".openwebui]
visibility = "public"
params = {{ num_ctx = 30000, num_predict = 200 }}
[models."{QWQ}".openwebui]
visibility = "public"
params = {{ num_ctx = 14000 }}
[openwebui]
url = "{owui}"
admin_email = "${{E2E_OWUI_EMAIL}}"
admin_password = "${{E2E_OWUI_PASSWORD}}"
task_model = "{CODE}"
default_user_role = "user"
enable_signup = true
openai_api = false
tasks = {{ follow_ups = true, title = true, tags = true, autocomplete = false }}
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


async def test_openwebui_tasks_reach_a_node_holding_the_task_model_and_load_nothing(
        owui: OpenWebUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_OWUI_EMAIL", ADMIN[0])
    monkeypatch.setenv("E2E_OWUI_PASSWORD", ADMIN[1])
    async with Simulator() as sim:
        nodes = [await sim.add_node(f"gpu-{i}", timing=Timing.instant()) for i in (1, 2, 3)]
        file = tmp_path / "desired_state.toml"
        file.write_text(tasks_file([n.url for n in nodes], free_port(), owui.url))
        svc = Service(file, drain_timeout=5)
        assert await svc.start()
        try:
            await _check(svc, nodes, owui)
        finally:
            await svc.stop()


async def _check(svc: Service, nodes: list[Any], owui: OpenWebUI) -> None:
    async def converged() -> bool:
        last = svc.daemon.last_pass
        return bool(last and last["ok"] and last["changes"] == 0)
    await eventually(converged, 120)
    assert svc.balancer is not None
    assert svc.balancer.settings.tasks is not None and svc.balancer.settings.tasks.model == CODE

    async with httpx.AsyncClient(base_url=owui.url, timeout=60) as client:
        token = (await client.post("/api/v1/auths/signin", json={"email": ADMIN[0], "password": ADMIN[1]})).json()["token"]
        admin = {"Authorization": f"Bearer {token}"}
        config = (await client.get("/api/v1/tasks/config", headers=admin)).json()
        assert (config["ENABLE_FOLLOW_UP_GENERATION"], config["ENABLE_TITLE_GENERATION"],
                config["ENABLE_TAGS_GENERATION"], config["ENABLE_AUTOCOMPLETE_GENERATION"]) == (True, True, True, False)

        user = (await client.post("/api/v1/auths/signup", json={
            "name": "Dana", "email": "dana@example.com", "password": "Dana-pass-1"})).json()
        headers = {"Authorization": f"Bearer {user['token']}"}
        # the employee's chat on qwq: one node loads it (codestral stays on the others)
        messages = [{"role": "user", "content": "Why is the sky blue? Explain briefly."}]
        r = await client.post("/api/chat/completions", headers=headers,
                              json={"model": QWQ, "stream": False, "messages": messages})
        assert r.status_code == 200, r.text
        messages.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
        await svc.balancer.refresh()
        holders = {n.name for n in nodes if CODE in n.loaded_models()}
        assert holders and len(holders) < 3, [n.loaded_models() for n in nodes]
        loads = sum(n.loads for n in nodes)
        for n in nodes:
            n.clear_requests()

        # what Open WebUI does after the answer: title, tags, follow-ups, for the chat's model
        for path in ("title", "tags", "follow_up"):
            r = await client.post(f"/api/v1/tasks/{path}/completions", headers=headers,
                                  json={"model": QWQ, "messages": messages, "chat_id": "c1"})
            assert r.status_code == 200, (path, r.text)

    sent = [(n.name, r.body) for n in nodes for r in n.requests if r.path == "/api/chat"]
    assert len(sent) == 3, sent
    assert {body["model"] for _, body in sent} == {CODE}
    assert {name for name, _ in sent} <= holders, (sent, holders)
    assert sum(n.loads for n in nodes) == loads
    tasks = svc.balancer.metrics.tasks
    assert tasks.served_total == 3 and tasks.model_loads_caused == 0 and tasks.timed_out_total == 0
    assert json.dumps(sent[0][1]).count("### Task:") == 1
    # counted apart from people's on /status and /metrics
    async with httpx.AsyncClient(base_url=svc.status_url, timeout=10) as status:
        data = (await status.get("/status")).json()
        shown = data["balancer"]["metrics"]["tasks"]
        assert (shown["served_total"], shown["model_loads_caused"], shown["queued"]) == (3, 0, 0)
        printed = io.StringIO()
        print_status(data, Console(file=printed, width=250))
        assert "Open WebUI tasks (of those): queued 0, served 3, timed out 0" in printed.getvalue()
        metrics = (await status.get("/metrics")).text
        assert "ollafleet_balancer_task_served_total 3.0" in metrics
        assert "ollafleet_balancer_task_model_loads_total 0.0" in metrics
