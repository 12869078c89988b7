"""The openwebui target against a real Open WebUI 0.12.4 (one per session, see conftest)."""

from __future__ import annotations

import pytest

from reconciler.plan.changes import Action, Status

from .conftest import Instance, entry, run

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
