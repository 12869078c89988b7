"""Each Open WebUI setting is declared once, in settings.SETTINGS: the schema and the table
agree, and the importer's inverse projection gives back what the file declared."""

from __future__ import annotations

from typing import Any

from reconciler.config import load_text
from reconciler.config.schema import OpenWebUI
from reconciler.targets.openwebui.diff import patch_group, wanted_for
from reconciler.targets.openwebui.settings import GROUPS, SETTINGS, file_fragment, missing_rows


def test_every_setting_of_the_schema_has_one_row_and_every_row_a_field() -> None:
    assert missing_rows(OpenWebUI) == []
    assert len({s.path for s in SETTINGS}) == len(SETTINGS)


def test_a_setting_declared_in_the_schema_but_not_in_the_table_is_caught() -> None:
    class WithAnother(OpenWebUI):
        enable_community_sharing: bool | None = None

    assert missing_rows(WithAnother) == ["enable_community_sharing"]


FILE = """version = 1
[openwebui]
url = "http://127.0.0.1:9"
api_key = "${K}"
task_model = "llama3.2:1b"
code_interpreter = true
default_user_role = "pending"
enable_signup = false
enable_api_keys = true
openai_api = false
ollama_urls = ["http://127.0.0.1:11434"]
[openwebui.code_execution]
enabled = true
engine = "jupyter"
[openwebui.tasks]
follow_ups = false
title = true
tags = false
search_query = false
autocomplete = false
[models."llama3.2:1b"]
"""


def test_the_inverse_projection_gives_back_the_files_settings() -> None:
    state = load_text(FILE, env={"K": "k"})
    wanted = wanted_for(state)
    assert wanted is not None
    groups: dict[str, dict[str, Any]] = {g: patch_group(g, {}, wanted) for g in GROUPS}
    fragment = file_fragment(groups)
    assert state.openwebui is not None
    declared = state.openwebui.model_dump(exclude={"url", "api_key", "admin_email", "admin_password", "admin_name"},
                                          exclude_none=True)
    assert fragment == declared
