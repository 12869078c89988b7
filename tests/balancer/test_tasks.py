"""Telling Open WebUI's background task requests from people's (balancer/tasks.py)."""
from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

from balancer.classify import classify
from balancer.tasks import TaskIdent, task_kind
from tests.openwebui_harness import OpenWebUIUnavailable, venv_dir

TASK_MODEL = "codestral:22b"
IDENT = TaskIdent(model=TASK_MODEL)
HISTORY = "USER: how do I reverse a list in Python?\nASSISTANT: use reversed(xs) or xs[::-1]."


def installed_defaults() -> dict[str, str]:
    """Open WebUI 0.12.4's built-in task templates, read from its installed config.py."""
    found = list(venv_dir().glob("lib/python3*/site-packages/open_webui/config.py"))
    if not found:
        raise OpenWebUIUnavailable(f"no Open WebUI in {venv_dir()}: run scripts/openwebui-venv.sh")
    out = {}
    for node in ast.parse(found[0].read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out[node.targets[0].id] = node.value.value
    return out


def render(template: str) -> str:
    """As Open WebUI fills a template: the chat's last messages, the prompt, the date..."""
    text = re.sub(r"\{\{MESSAGES[^}]*\}\}", HISTORY, template)
    return re.sub(r"\{\{[^}]*\}\}", "General", text)


def body(content: str, model: str = TASK_MODEL, before: list[dict[str, str]] | None = None
         ) -> dict[str, Any]:
    return {"model": model, "stream": False,
            "messages": [*(before or []), {"role": "user", "content": content}]}


DEFAULT_NAMES = {
    "title": "DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE",
    "tags": "DEFAULT_TAGS_GENERATION_PROMPT_TEMPLATE",
    "follow_ups": "DEFAULT_FOLLOW_UP_GENERATION_PROMPT_TEMPLATE",
    "search_query": "DEFAULT_QUERY_GENERATION_PROMPT_TEMPLATE",
    "autocomplete": "DEFAULT_AUTOCOMPLETE_GENERATION_PROMPT_TEMPLATE",
}


@pytest.mark.parametrize("kind", sorted(DEFAULT_NAMES))
def test_every_built_in_template_is_a_task_of_its_kind(kind: str) -> None:
    text = render(installed_defaults()[DEFAULT_NAMES[kind]])
    assert task_kind(IDENT, TASK_MODEL, body(text)) == kind
    # Open WebUI puts the task model's system prompt (if it has one) first
    system = [{"role": "system", "content": "You are terse."}]
    assert task_kind(IDENT, TASK_MODEL, body(text, before=system)) == kind
    # only on the task model, when the file names one
    assert task_kind(IDENT, "qwq:32b", body(text)) is None
    assert task_kind(TaskIdent(), "qwq:32b", body(text)) == kind


def test_a_customised_template_read_from_openwebui_is_known_by_its_fixed_text() -> None:
    custom = ("Name this conversation in at most four words.\n{{MESSAGES:END:4}}\n"
              "Answer with the name only.")
    ident = TaskIdent(TASK_MODEL, {"title": custom})
    assert task_kind(ident, TASK_MODEL, body(render(custom))) == "title"
    # the same words without the template's closing line: a person's
    assert task_kind(ident, TASK_MODEL, body("Name this conversation in at most four words.\n"
                                             + HISTORY)) is None
    # built-in kinds still known beside it (another kind's template left at the default)
    tags = render(installed_defaults()[DEFAULT_NAMES["tags"]])
    assert task_kind(ident, TASK_MODEL, body(tags)) == "tags"


def test_a_person_quoting_a_template_is_a_person() -> None:
    title = render(installed_defaults()[DEFAULT_NAMES["title"]])
    # quoted in the middle of a message
    assert task_kind(IDENT, TASK_MODEL, body("Why does Open WebUI send this?\n\n" + title)) is None
    # at the start of a chat with several turns
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert task_kind(IDENT, TASK_MODEL, body(title, before=earlier)) is None
    # a heading alone, without the template's structure
    assert task_kind(IDENT, TASK_MODEL, body("### Task:\nwrite a sort in Go")) is None


def test_classify_marks_task_requests_only_with_identification_data() -> None:
    raw = ('{"model": "codestral:22b", "stream": false, "messages": [{"role": "user", '
           '"content": %s}]}')
    text = render(installed_defaults()[DEFAULT_NAMES["follow_ups"]])
    data = (raw % json.dumps(text)).encode()
    assert classify("POST", "/api/chat", data, tasks=IDENT).task == "follow_ups"
    assert classify("POST", "/v1/chat/completions", data, tasks=IDENT).task == "follow_ups"
    assert classify("POST", "/api/chat", data).task is None  # no identification handed over
    assert classify("POST", "/api/generate", data, tasks=IDENT).task is None
