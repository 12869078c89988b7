"""Pure conversation fingerprints for KV-cache affinity.

A node keeps the KV cache of the last conversation it ran. When a new request extends
that conversation (its messages start with the node's last ones: same model, tools and
num_ctx), sending it there skips re-reading the whole history. The four chat APIs are
normalised to one list of (role, text) messages first.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

MIN_MESSAGES = 3  # a shorter shared prefix saves too little to matter
MIN_SHARE = 0.4  # ... and so does one covering less than 40 % of the new conversation


@dataclass(frozen=True)
class Conversation:
    key: int  # model, tools, num_ctx
    messages: tuple[int, ...]  # one hash per normalised message


def _hash(*parts: object) -> int:
    """Stable across processes (unlike hash()): balancers of a cluster compare these."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI parts, Anthropic blocks, Responses items
        return "\n".join(_text(p.get("text", p.get("content", ""))) if isinstance(p, dict)
                         else str(p) for p in content)
    return "" if content is None else json.dumps(content, sort_keys=True)


def _message(role: Any, content: Any, extra: Any = None) -> int:
    return _hash(str(role), _text(content), json.dumps(extra, sort_keys=True) if extra else "")


def _messages(path: str, data: dict[str, Any]) -> list[int] | None:
    out: list[int] = []
    if path == "/v1/messages" and data.get("system"):
        out.append(_message("system", data["system"]))
    if path == "/v1/responses":
        if data.get("instructions"):
            out.append(_message("system", data["instructions"]))
        items = data.get("input")
        if isinstance(items, str):
            return out + [_message("user", items)]
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, dict):
                out.append(_message(item.get("role", item.get("type")),
                                    item.get("content", item.get("output")),
                                    item.get("arguments")))
        return out
    msgs = data.get("messages")
    if not isinstance(msgs, list):
        return None
    for m in msgs:
        if isinstance(m, dict):
            out.append(_message(m.get("role"), m.get("content"), m.get("tool_calls")))
    return out


def conversation_of(path: str, model: str | None, data: dict[str, Any]) -> Conversation | None:
    if model is None or path not in ("/api/chat", "/v1/chat/completions", "/v1/messages",
                                     "/v1/responses"):
        return None
    messages = _messages(path, data)
    if not messages:
        return None
    options = data.get("options")
    options = options if isinstance(options, dict) else {}
    tools = json.dumps(data.get("tools"), sort_keys=True) if data.get("tools") else ""
    return Conversation(_hash(model, tools, options.get("num_ctx")), tuple(messages))


def continues(previous: Conversation | None, new: Conversation | None) -> bool:
    """Does `new` extend `previous` by a meaningful, strict message-level prefix?"""
    if previous is None or new is None or previous.key != new.key:
        return False
    n = len(previous.messages)
    return (MIN_MESSAGES <= n < len(new.messages) and n >= MIN_SHARE * len(new.messages)
            and new.messages[:n] == previous.messages)
