"""Credentials and models the connection does not list, against a real Open WebUI."""

from __future__ import annotations

import pytest

from .conftest import ADMIN, Instance, entry, run

pytestmark = pytest.mark.openwebui

API_KEY_CREDENTIALS = 'api_key = "${OWUI_API_KEY}"'


def _api_key(inst: Instance) -> str:
    with inst.admin() as admin:
        found = admin.get("/api/v1/auths/api_key")
        if found.status_code == 404:
            found = admin.post("/api/v1/auths/api_key")
        found.raise_for_status()
        return str(found.json()["api_key"])


def test_an_api_key_reads_and_writes_settings(converged: Instance) -> None:
    key = _api_key(converged)
    env = {"OWUI_API_KEY": key}
    same = run(converged.state(credentials=API_KEY_CREDENTIALS, env=env))
    assert not same.plan.problems and same.plan.changes == () and same.writes == []

    # the admin config is written whole, without the MFA fields an API key may not send
    state = converged.state(credentials=API_KEY_CREDENTIALS, env=env,
                            replace={'default_user_role = "user"': 'default_user_role = "pending"'})
    result = run(state)
    assert [c.path_text for c in result.plan.changes] == ["settings.default_user_role"]
    assert result.report is not None and result.report.ok, result.report.to_json()
    assert result.writes == ["POST /api/v1/auths/admin/config"]
    with converged.admin() as admin:
        assert admin.get("/api/v1/auths/admin/config").json()["DEFAULT_USER_ROLE"] == "pending"


def test_turning_api_keys_off_is_refused_while_ollafleet_uses_one(converged: Instance) -> None:
    env = {"OWUI_API_KEY": _api_key(converged)}
    state = converged.state(credentials=API_KEY_CREDENTIALS, env=env,
                            replace={"enable_api_keys = true": "enable_api_keys = false"})
    result = run(state, apply=False)
    assert result.plan.changes == ()
    assert any("OWUI_API_KEY" in n.message and "enable_api_keys" in n.message for n in result.plan.notes)


def test_a_wrong_api_key_names_the_variable_not_the_value(converged: Instance) -> None:
    wrong = "sk-00000000000000000000000000000000"
    result = run(converged.state(credentials=API_KEY_CREDENTIALS, env={"OWUI_API_KEY": wrong}))
    assert result.plan.changes == () and result.writes == []
    [problem] = result.plan.problems
    assert "${OWUI_API_KEY}" in problem.message and wrong not in problem.message


def test_a_wrong_password_names_the_variables_not_the_values(converged: Instance) -> None:
    wrong = "not-the-password"
    result = run(converged.state(env={"OWUI_ADMIN_PASSWORD": wrong}))
    assert result.writes == []
    [problem] = result.plan.problems
    assert "${OWUI_ADMIN_EMAIL}" in problem.message and "${OWUI_ADMIN_PASSWORD}" in problem.message
    assert wrong not in problem.message and ADMIN[0] not in problem.message


def test_a_model_the_connection_does_not_list_still_gets_its_entry(converged: Instance) -> None:
    ghost = '[models."ghost:7b".openwebui]\nvisibility = "public"\nparams = { num_ctx = 8192 }\n'
    result = run(converged.state(extra_models=ghost))
    try:
        assert [(c.action.value, c.path_text) for c in result.plan.changes] == [("create", 'models."ghost:7b"')]
        assert any(n.message.startswith('WARNING: models."ghost:7b": no Ollama connection of Open WebUI lists')
                   for n in result.plan.notes)
        assert result.report is not None and result.report.ok, result.report.to_json()
        with converged.admin() as admin:
            assert entry(admin, "ghost:7b")["params"] == {"num_ctx": 8192}
        assert run(converged.state(extra_models=ghost)).writes == []
    finally:
        with converged.admin() as admin:
            admin.post("/api/v1/models/model/delete", json={"id": "ghost:7b"}).raise_for_status()
