"""Pure identification of Open WebUI's background task requests (title, tags, follow-ups,
search queries, autocomplete): no I/O.

Open WebUI 0.12.4 builds each task request the same way (routers/tasks.py): the task model,
one user message rendered from the task's prompt template, `stream: false`. Nothing else marks
it on the way to Ollama (its `metadata.task` is dropped before the request leaves), so the
balancer tells a task by that shape:
  - the model is the task model the file (or Open WebUI) names, when one is named;
  - the messages are one user message, after at most Open WebUI's system prompts;
  - its text matches a template in force: a customised template (read from Open WebUI's
    /api/v1/tasks/config by the reconciler) by its fixed text around the `{{...}}` slots, in
    order; an empty template means Open WebUI's built-in one, known by its structure: it
    opens with the `### Task:` heading, holds the chat in a `<chat_history>` block, and names
    the task's JSON answer key (`"title"`, `"tags"`, ...) before that block.
A person's message that quotes a template in the middle, or a chat of several turns, is a
person's request.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Open WebUI's task kinds as the file names them, with the /api/v1/tasks/config keys of their
# switch and template, and the JSON key the built-in template asks the model to answer with.
KINDS: dict[str, tuple[str, str, str]] = {
    "title": ("ENABLE_TITLE_GENERATION", "TITLE_GENERATION_PROMPT_TEMPLATE", "title"),
    "tags": ("ENABLE_TAGS_GENERATION", "TAGS_GENERATION_PROMPT_TEMPLATE", "tags"),
    "follow_ups": ("ENABLE_FOLLOW_UP_GENERATION", "FOLLOW_UP_GENERATION_PROMPT_TEMPLATE", "follow_ups"),
    "search_query": ("ENABLE_SEARCH_QUERY_GENERATION", "QUERY_GENERATION_PROMPT_TEMPLATE", "queries"),
    "autocomplete": ("ENABLE_AUTOCOMPLETE_GENERATION", "AUTOCOMPLETE_GENERATION_PROMPT_TEMPLATE", "text"),
}
HEADING = "### Task:"
HISTORY = "<chat_history>"
_SLOT = re.compile(r"\{\{[^{}]*\}\}")
MIN_PIECE = 3  # fixed text shorter than this (a newline, a colon) says nothing


@dataclass(frozen=True)
class TaskIdent:
    """What tells a task request, handed over by the reconciler (balancer Settings)."""
    model: str | None = None  # the task model, normalised; None: Open WebUI uses the chat's model
    templates: Mapping[str, str] = field(default_factory=dict)  # kind -> template in force ("" = built in)


def _pieces(template: str) -> list[str]:
    return [p.strip() for p in _SLOT.split(template) if len(p.strip()) >= MIN_PIECE]


def _matches_template(text: str, template: str) -> bool:
    """The fixed text of a customised template, in order, the first piece opening the text."""
    pieces = _pieces(template)
    if not pieces or not text.startswith(pieces[0]):
        return False
    at = len(pieces[0])
    for piece in pieces[1:]:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def _built_in_kind(text: str) -> str | None:
    """The kind of a text rendered from one of Open WebUI's built-in templates, by structure."""
    if not text.startswith(HEADING):
        return None
    head, sep, rest = text.partition(HISTORY)
    if not sep or "</chat_history>" not in rest:
        return None
    for kind, (_, _, key) in KINDS.items():
        if f'"{key}"' in head:
            return kind
    return None


def _only_user_text(messages: Any) -> str | None:
    """The text of the one user message (after system ones only), or None."""
    if not isinstance(messages, list) or not messages:
        return None
    *before, last = messages
    if not all(isinstance(m, dict) and m.get("role") == "system" for m in before):
        return None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    return content.lstrip() if isinstance(content, str) else None


def task_kind(ident: TaskIdent, model: str | None, data: Mapping[str, Any]) -> str | None:
    """The task kind of a chat request body (`model` already normalised), or None: a person's."""
    if ident.model is not None and model != ident.model:
        return None
    text = _only_user_text(data.get("messages"))
    if text is None:
        return None
    for kind, template in ident.templates.items():
        if template and _matches_template(text, template):
            return kind
    return _built_in_kind(text)
