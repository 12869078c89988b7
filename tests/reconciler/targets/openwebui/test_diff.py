"""The Open WebUI diff, pure: the file and what Open WebUI holds (its JSON) → changes and notes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.config import load_text
from reconciler.plan.changes import Action
from reconciler.targets.openwebui.diff import (ADMIN_KEY, PERSISTENCE_NOTE, PUBLIC_GRANT, Seen, Wanted, WantedModel,
                                               diff_openwebui, grants_for, model_body, patch_group, wanted_for)
from reconciler.targets.same import same

FILE = """
version = 1
[balancer]
listen = "0.0.0.0:11434"
[models."codestral:22b".openwebui]
visibility = "public"
capabilities = { vision = false, citations = false }
params = { num_ctx = 30000, num_predict = 29000, temperature = 0.1 }
[openwebui]
url = "http://127.0.0.1:3000"
admin_email = "${E}"
admin_password = "${P}"
"""
ENV = {"E": "a@example.com", "P": "pw", "K": "sk-1"}


def wanted(settings: str = "", models: str = "", file: str = FILE) -> Wanted:
    text = file.replace("[openwebui]\n", models + "[openwebui]\n") + settings
    w = wanted_for(load_text(text, env=ENV))
    assert w is not None
    return w


# what a converged Open WebUI answers (trimmed to the fields that matter here)
GROUPS: dict[str, dict[str, Any]] = {
    "task": {"TASK_MODEL": "codestral:22b", "ENABLE_TITLE_GENERATION": True},
    "code": {"ENABLE_CODE_INTERPRETER": False, "ENABLE_CODE_EXECUTION": True, "CODE_EXECUTION_ENGINE": "pyodide"},
    "auth": {"DEFAULT_USER_ROLE": "user", "ENABLE_SIGNUP": True, "ENABLE_API_KEYS": False, "JWT_EXPIRES_IN": "4w"},
    "ollama": {"ENABLE_OLLAMA_API": True, "OLLAMA_BASE_URLS": ["http://127.0.0.1:11434"], "OLLAMA_API_CONFIGS": {}},
    "openai": {"ENABLE_OPENAI_API": False, "OPENAI_API_BASE_URLS": [], "OPENAI_API_KEYS": [], "OPENAI_API_CONFIGS": {}},
}
ENTRY: dict[str, Any] = {
    "id": "codestral:22b", "base_model_id": None, "name": "codestral:22b", "is_active": True,
    "params": {"num_ctx": 30000, "max_tokens": 29000, "temperature": 0.1},
    "meta": {"profile_image_url": "/static/favicon.png", "description": None,
             "capabilities": {"vision": False, "citations": False, "web_search": True}},
    "access_grants": [{"id": "g1", "resource_type": "model", "resource_id": "codestral:22b", **PUBLIC_GRANT}],
}
SEED_SETTINGS = """task_model = "codestral:22b"
code_interpreter = false
code_execution = { enabled = true, engine = "pyodide" }
default_user_role = "user"
enable_signup = true
openai_api = false
"""


def seen(groups: dict[str, dict[str, Any]] | None = None, entry: dict[str, Any] | None = ENTRY,
         listed: frozenset[str] | None = frozenset({"codestral:22b"})) -> Seen:
    return Seen("0.12.4", False, copy.deepcopy(groups or GROUPS), {"codestral:22b": copy.deepcopy(entry)}, listed)


def changes_of(w: Wanted, s: Seen) -> list[tuple[str, str, Any, Any]]:
    return [(c.action.value, c.path_text, c.before, c.after) for c in diff_openwebui("openwebui", w, s)[0]]


def test_converged_means_no_change_and_no_note() -> None:
    assert diff_openwebui("openwebui", wanted(SEED_SETTINGS), seen()) == ([], [])


def test_each_differing_field_is_one_change_with_before_and_after() -> None:
    groups = copy.deepcopy(GROUPS)
    groups["task"]["TASK_MODEL"] = ""
    groups["code"]["CODE_EXECUTION_ENGINE"] = "jupyter"
    groups["ollama"]["OLLAMA_BASE_URLS"] = ["http://old:11434"]
    entry = copy.deepcopy(ENTRY)
    entry["params"] = {"num_ctx": 2048, "max_tokens": 29000, "temperature": 0.8, "seed": 7}
    entry["meta"]["capabilities"]["vision"] = True
    entry["access_grants"] = []
    assert changes_of(wanted(SEED_SETTINGS), seen(groups, entry)) == [
        ("update", "settings.task_model", "", "codestral:22b"),
        ("update", "settings.code_execution.engine", "jupyter", "pyodide"),
        ("update", "settings.ollama_urls", ["http://old:11434"], ["http://127.0.0.1:11434"]),
        ("update", 'models."codestral:22b".capabilities.vision', True, False),
        ("update", 'models."codestral:22b".params.num_ctx', 2048, 30000),
        ("update", 'models."codestral:22b".params.temperature', 0.8, 0.1),
        ("delete", 'models."codestral:22b".params.seed', 7, None),
        ("update", 'models."codestral:22b".visibility', "private", "public"),
    ]


def test_a_param_set_by_hand_is_drift_but_open_webui_only_params_are_not() -> None:
    entry = copy.deepcopy(ENTRY)
    entry["params"]["top_k"] = 20
    entry["params"]["function_calling"] = "native"
    assert changes_of(wanted(), seen(entry=entry)) == [
        ("delete", 'models."codestral:22b".params.top_k', 20, None)]


def test_num_predict_is_compared_with_what_open_webui_stores_as_max_tokens() -> None:
    entry = copy.deepcopy(ENTRY)
    entry["params"]["max_tokens"] = 1000
    assert changes_of(wanted(), seen(entry=entry)) == [
        ("update", 'models."codestral:22b".params.num_predict', 1000, 29000)]


def test_undeclared_settings_are_left_as_the_admin_set_them() -> None:
    groups = copy.deepcopy(GROUPS)
    groups["task"]["TASK_MODEL"] = "something-else"
    groups["auth"]["DEFAULT_USER_ROLE"] = "pending"
    groups["openai"]["ENABLE_OPENAI_API"] = True
    assert changes_of(wanted(), seen(groups)) == []


def test_the_ollama_connection_defaults_to_the_balancer_and_must_be_on() -> None:
    groups = copy.deepcopy(GROUPS)
    groups["ollama"] = {"ENABLE_OLLAMA_API": None, "OLLAMA_BASE_URLS": ["http://127.0.0.1:11434/"]}
    assert changes_of(wanted(), seen(groups)) == [("update", "settings.ollama_api", None, True)]


def test_a_fresh_instance_creates_the_admin_first_and_everything_waits_for_it() -> None:
    found, notes = diff_openwebui("openwebui", wanted(SEED_SETTINGS), Seen("0.12.4", fresh=True))
    assert (found[0].action, found[0].path_text) == (Action.CREATE, "admin")
    assert all(c.requires == (ADMIN_KEY,) for c in found[1:])
    assert found[0].key == ADMIN_KEY
    assert [c.path_text for c in found if c.action is Action.CREATE] == ["admin", 'models."codestral:22b"']
    assert PERSISTENCE_NOTE in notes


def test_a_missing_entry_is_created_whole_and_an_unlisted_model_gets_a_note() -> None:
    found, notes = diff_openwebui("openwebui", wanted(), seen(entry=None, listed=frozenset()))
    assert [(c.action, c.path_text) for c in found] == [(Action.CREATE, 'models."codestral:22b"')]
    assert found[0].after == {"visibility": "public", "capabilities": {"vision": False, "citations": False},
                              "params": {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1}}
    [warning] = [n for n in notes if n.startswith("WARNING: ")]
    assert 'models."codestral:22b": no Ollama connection of Open WebUI lists this model' in warning


UNTAGGED = """[models."codestral-30k"]
from = "codestral:22b"
[models."codestral-30k".openwebui]
visibility = "public"
"""


def test_an_untagged_model_is_written_under_the_id_the_connection_lists() -> None:
    """Ollama lists "codestral-30k:latest": an entry under "codestral-30k" would reach nobody."""
    w = wanted(models=UNTAGGED, settings='task_model = "codestral-30k"\n')
    assert [m.id for m in w.models] == ["codestral:22b", "codestral-30k:latest"]
    assert w.settings["task_model"] == "codestral-30k:latest"
    listed = frozenset({"codestral:22b", "codestral-30k:latest"})
    found, notes = diff_openwebui("openwebui", w, seen(listed=listed))
    assert [(c.action, c.path_text, c.after) for c in found] == [
        (Action.UPDATE, "settings.task_model", "codestral-30k:latest"),
        (Action.CREATE, 'models."codestral-30k:latest"', {"visibility": "public"})]
    assert not any(n.startswith("WARNING") for n in notes)
    # an entry left under the untagged id (as earlier versions wrote it) is removed
    stray = {**ENTRY, "id": "codestral-30k"}
    found, _ = diff_openwebui("openwebui", w, Seen("0.12.4", False, copy.deepcopy(GROUPS),
                                                   {"codestral:22b": ENTRY, "codestral-30k:latest": None}, listed,
                                                   {"codestral-30k": stray}))
    assert [(c.action, c.path_text) for c in found if c.path[0] == "models"] == [
        (Action.CREATE, 'models."codestral-30k:latest"'), (Action.DELETE, 'models.codestral-30k')]


def test_the_task_model_not_listed_is_reported() -> None:
    notes = diff_openwebui("openwebui", wanted(SEED_SETTINGS), seen(listed=frozenset({"qwq:32b"})))[1]
    assert any("task model" in n for n in notes)


def test_an_api_key_user_cannot_turn_api_keys_off() -> None:
    file = FILE.replace('admin_email = "${E}"\nadmin_password = "${P}"', 'api_key = "${K}"')
    w = wanted("enable_api_keys = false\n", file=file)
    groups = copy.deepcopy(GROUPS)
    groups["auth"]["ENABLE_API_KEYS"] = True
    found, notes = diff_openwebui("openwebui", w, seen(groups))
    assert found == [] and any("${K}" in n and "sk-1" not in n for n in notes)


def test_create_body_has_the_editor_defaults_the_public_grant_and_open_webui_param_names() -> None:
    model = WantedModel("m:1", True, capabilities={"vision": False}, params={"num_predict": 5}, system="Be brief")
    body = model_body(model, None)
    assert body["params"] == {"max_tokens": 5, "system": "Be brief"}
    assert body["meta"]["capabilities"]["vision"] is False and body["meta"]["capabilities"]["web_search"] is True
    assert body["access_grants"] == [PUBLIC_GRANT] and body["name"] == "m:1"


def test_update_body_keeps_what_the_file_does_not_manage() -> None:
    model = WantedModel("codestral:22b", True, capabilities={"vision": True}, params={"temperature": 0.2})
    entry = copy.deepcopy(ENTRY)
    entry["params"]["seed"] = 7                        # an Ollama option: the file's params are the whole set
    entry["params"]["function_calling"] = "native"     # Open WebUI's own: not the file's business
    body = model_body(model, entry)
    assert body["params"] == {"temperature": 0.2, "function_calling": "native"}
    assert body["meta"]["capabilities"] == {"vision": True, "citations": False, "web_search": True}
    assert body["meta"]["profile_image_url"] == "/static/favicon.png" and "access_grants" not in body


def test_visibility_only_touches_the_public_grant() -> None:
    group = {"id": "x", "principal_type": "group", "principal_id": "devs", "permission": "write"}
    private = WantedModel("m", False)
    public = WantedModel("m", True)
    assert grants_for(private, [group, {"id": "y", **PUBLIC_GRANT}]) == [
        {"principal_type": "group", "principal_id": "devs", "permission": "write"}]
    assert grants_for(public, [group]) == [
        {"principal_type": "group", "principal_id": "devs", "permission": "write"}, PUBLIC_GRANT]


def test_patch_group_sets_only_declared_fields() -> None:
    current = {"DEFAULT_USER_ROLE": "pending", "ENABLE_SIGNUP": False, "JWT_EXPIRES_IN": "1h", "ENABLE_MFA": True}
    patched = patch_group("auth", current, wanted(SEED_SETTINGS))
    assert patched == {"DEFAULT_USER_ROLE": "user", "ENABLE_SIGNUP": True, "JWT_EXPIRES_IN": "1h", "ENABLE_MFA": True}


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1.0, True), (0.1, 0.1, True), (True, 1, False), (False, 0, False), (None, False, False),
    ("http://h:1/", "http://h:1", True), ("a/", "a", False), ([1, "x"], [1.0, "x"], True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
])
def test_same(a: Any, b: Any, equal: bool) -> None:
    assert same(a, b) is equal


def test_connection_options_that_defeat_the_file_are_reported() -> None:
    groups = copy.deepcopy(GROUPS)
    groups["ollama"]["OLLAMA_API_CONFIGS"] = {"0": {"enable": True, "prefix_id": "lb", "connection_type": "external"}}
    found, notes = diff_openwebui("openwebui", wanted(SEED_SETTINGS), seen(groups))
    assert found == []
    assert any('prefix "lb"' in n for n in notes) and any("external" in n for n in notes)


def test_connection_options_follow_their_url_when_the_list_changes() -> None:
    current = {"ENABLE_OLLAMA_API": True, "OLLAMA_BASE_URLS": ["http://a:1", "http://127.0.0.1:11434"],
               "OLLAMA_API_CONFIGS": {"0": {"prefix_id": "a"}, "1": {"tags": ["lb"]}}}
    patched = patch_group("ollama", current, wanted())
    assert patched["OLLAMA_BASE_URLS"] == ["http://127.0.0.1:11434"]
    assert patched["OLLAMA_API_CONFIGS"] == {"0": {"tags": ["lb"]}}
    converged = dict(GROUPS["ollama"], OLLAMA_API_CONFIGS={"0": {"enable": True}})
    assert patch_group("ollama", converged, wanted()) == converged
