"""The openwebui target against a real Open WebUI 0.12.4 (one per session, see conftest)."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from reconciler import cli
from reconciler.plan.changes import Action, Status
from reconciler.targets.openwebui import openwebui_targets

from .conftest import ADMIN, ENV, PASSWORD_CREDENTIALS, SEED, Instance, Pass, entry, in_thread_call, run

pytestmark = pytest.mark.openwebui

SEED_PARAMS = {
    "codestral:22b": {"num_ctx": 30000, "max_tokens": 29000, "temperature": 0.1, "top_p": 0.95,
                      "repeat_penalty": 1.15},
    "qwq:32b": {"num_ctx": 14000, "max_tokens": 13000},
}


def test_fresh_instance_reads_back_as_declared(instance: Instance) -> None:
    first = instance.first
    assert not first.plan.problems, first.plan.problems
    paths = [c.path_text for c in first.plan.changes]
    assert paths[0] == "admin" and first.plan.changes[0].action is Action.CREATE
    assert 'models."codestral:22b"' in paths and "settings.task_model" in paths
    assert first.report is not None
    assert [r.status for r in first.report.results] == [Status.APPLIED] * len(paths), first.report.to_json()

    with instance.admin() as admin:
        task = admin.get("/api/v1/tasks/config").json()
        assert task["TASK_MODEL"] == "codestral:22b"
        code = admin.get("/api/v1/configs/code_execution").json()
        assert (code["ENABLE_CODE_INTERPRETER"], code["ENABLE_CODE_EXECUTION"], code["CODE_EXECUTION_ENGINE"]) \
            == (False, True, "pyodide")
        auth = admin.get("/api/v1/auths/admin/config").json()
        assert (auth["DEFAULT_USER_ROLE"], auth["ENABLE_SIGNUP"], auth["ENABLE_API_KEYS"]) == ("user", True, True)
        ollama = admin.get("/ollama/config").json()
        assert ollama["ENABLE_OLLAMA_API"] is True and ollama["OLLAMA_BASE_URLS"] == [instance.ollama_url]
        assert admin.get("/openai/config").json()["ENABLE_OPENAI_API"] is False
        for model_id, params in SEED_PARAMS.items():
            row = entry(admin, model_id)
            assert row["params"] == params
            caps = row["meta"]["capabilities"]
            assert (caps["vision"], caps["citations"]) == (False, False)
            assert {"principal_type": "user", "principal_id": "*", "permission": "read"} in [
                {k: g[k] for k in ("principal_type", "principal_id", "permission")} for g in row["access_grants"]]


def test_second_apply_sends_no_write(converged: Instance) -> None:
    again = run(converged.state())
    assert again.plan.changes == ()
    assert not again.plan.problems
    assert again.writes == []


def _changes(result: Pass) -> list[tuple[str, object, object]]:
    return [(c.path_text, c.before, c.after) for c in result.plan.changes]


def test_a_change_in_the_file_changes_exactly_that_field(converged: Instance) -> None:
    with converged.admin() as admin:
        row_before = entry(admin, "codestral:22b")
        task_before = admin.get("/api/v1/tasks/config").json()
    state = converged.state(replace={"temperature = 0.1": "temperature = 0.3",
                                     'task_model = "codestral:22b"': 'task_model = "qwq:32b"'})
    result = run(state)
    assert _changes(result) == [("settings.task_model", "codestral:22b", "qwq:32b"),
                                ('models."codestral:22b".params.temperature', 0.1, 0.3)]
    assert result.report is not None and result.report.ok
    assert sorted(result.writes) == ["POST /api/v1/models/model/update", "POST /api/v1/tasks/config/update"]
    with converged.admin() as admin:
        row_after = entry(admin, "codestral:22b")
        task_after = admin.get("/api/v1/tasks/config").json()
    assert row_after["params"] == {**row_before["params"], "temperature": 0.3}
    assert row_after["meta"] == row_before["meta"] and row_after["name"] == row_before["name"]
    assert row_after["access_grants"] == row_before["access_grants"]
    assert task_after == {**task_before, "TASK_MODEL": "qwq:32b"}


def test_a_param_removed_from_the_file_is_removed_and_one_added_by_hand_too(converged: Instance) -> None:
    with converged.admin() as admin:     # an admin sets top_k and a UI-only option by hand
        row = entry(admin, "qwq:32b")
        body = {k: row[k] for k in ("id", "base_model_id", "name", "meta", "is_active")}
        admin.post("/api/v1/models/model/update", json={
            **body, "params": {**row["params"], "top_k": 20, "function_calling": "native"}}).raise_for_status()
    state = converged.state(replace={"top_p = 0.95, ": ""})
    result = run(state)
    assert sorted(_changes(result)) == [('models."codestral:22b".params.top_p', 0.95, None),
                                        ('models."qwq:32b".params.top_k', 20, None)]
    assert result.report is not None and result.report.ok
    with converged.admin() as admin:
        assert entry(admin, "codestral:22b")["params"] == {
            k: v for k, v in SEED_PARAMS["codestral:22b"].items() if k != "top_p"}
        assert entry(admin, "qwq:32b")["params"] == {**SEED_PARAMS["qwq:32b"], "function_calling": "native"}
    assert run(state).writes == []


def _drift(admin: httpx.Client) -> None:
    """Change things behind ollafleet's back, the way an admin clicking in the UI would."""
    task = admin.get("/api/v1/tasks/config").json()
    admin.post("/api/v1/tasks/config/update", json={**task, "TASK_MODEL": ""}).raise_for_status()
    code = admin.get("/api/v1/configs/code_execution").json()
    admin.post("/api/v1/configs/code_execution", json={**code, "ENABLE_CODE_INTERPRETER": True}).raise_for_status()
    row = entry(admin, "codestral:22b")
    body = {k: row[k] for k in ("id", "base_model_id", "name", "meta", "is_active")}
    admin.post("/api/v1/models/model/update",
               json={**body, "params": {**row["params"], "temperature": 0.8}}).raise_for_status()
    admin.post("/api/v1/models/model/access/update",
               json={"id": "qwq:32b", "name": "qwq:32b", "access_grants": []}).raise_for_status()


def test_drift_is_planned_and_restored(converged: Instance, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with converged.admin() as admin:
        _drift(admin)
    state = converged.state()
    planned = run(state, apply=False)
    assert sorted(_changes(planned)) == sorted([
        ("settings.task_model", "", "codestral:22b"),
        ("settings.code_interpreter", True, False),
        ('models."codestral:22b".params.temperature', 0.8, 0.1),
        ('models."qwq:32b".visibility', "private", "public"),
    ])
    assert planned.writes == []

    # what an administrator sees from `ollafleet plan`
    path = tmp_path / "desired_state.toml"
    path.write_text(SEED.format(url=converged.owui.url, ollama=converged.ollama_url, extra_models="",
                                credentials=PASSWORD_CREDENTIALS))
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    args = argparse.Namespace(file=str(path), json=False, detailed_exitcode=True)
    code = in_thread_call(cli.cmd_plan, args, openwebui_targets)
    out = capsys.readouterr().out
    assert code == 2
    assert '~ models."codestral:22b".params.temperature: 0.8 → 0.1' in out
    assert '~ settings.task_model: "" → "codestral:22b"' in out
    assert ADMIN[1] not in out

    fixed = run(state)
    assert fixed.report is not None and fixed.report.ok, fixed.report.to_json()
    again = run(state)
    assert again.plan.changes == () and again.writes == []


def test_a_user_chats_through_openwebui_with_the_models_params(converged: Instance) -> None:
    base = converged.owui.url
    user = httpx.post(base + "/api/v1/auths/signup", timeout=30,
                      json={"name": "Alice", "email": "alice@example.com", "password": "Al1ce-pass!"})
    if user.status_code != 200:  # this session signed her up already
        user = httpx.post(base + "/api/v1/auths/signin", timeout=30,
                          json={"email": "alice@example.com", "password": "Al1ce-pass!"})
    assert user.json()["role"] == "user"          # default_user_role = "user": no pending wait
    with httpx.Client(base_url=base, timeout=60,
                      headers={"Authorization": f"Bearer {user.json()['token']}"}) as alice:
        visible = {m["id"] for m in alice.get("/api/models").json()["data"]}
        assert {"codestral:22b", "qwq:32b"} <= visible            # public entries
        converged.node.clear_requests()
        reply = alice.post("/api/chat/completions", json={
            "model": "codestral:22b", "stream": False,
            "messages": [{"role": "user", "content": "Write hello world in C"}]})
        assert reply.status_code == 200, reply.text
        chats = [r.body for r in converged.node.requests if r.path == "/api/chat"]
        assert [c["model"] for c in chats] == ["codestral:22b"]
        assert chats[0]["options"] == {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1,
                                       "top_p": 0.95, "repeat_penalty": 1.15}

        converged.node.clear_requests()
        title = alice.post("/api/v1/tasks/title/completions", json={
            "model": "qwq:32b", "messages": [{"role": "user", "content": "Write hello world in C"},
                                             {"role": "assistant", "content": "int main() {}"}]})
        assert title.status_code == 200, title.text
        tasks = [r.body for r in converged.node.requests if r.path == "/api/chat"]
        assert [t["model"] for t in tasks] == ["codestral:22b"]   # the task model, not the chat's qwq
