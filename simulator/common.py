"""Helpers shared by the native and the compatible endpoints."""

from __future__ import annotations

import math
import random
import zlib
from typing import TYPE_CHECKING, Any

from .faults import Fault
from .gofmt import DurationError, keep_alive_ns
from .state import InstalledModel
from .wire import HTTPError

if TYPE_CHECKING:
    from .node import SimNode


def find_model(node: SimNode, name: str, path: str) -> InstalledModel | None:
    """The installed model, or None (also while the MODEL_NOT_FOUND fault is on)."""
    if node.fault_state.applies(Fault.MODEL_NOT_FOUND, path):
        return None
    return node.state.get(name)


def need_model(node: SimNode, name: str, path: str, message: str | None = None,
               ) -> InstalledModel:
    model = find_model(node, name, path)
    if model is None:
        raise HTTPError(404, message or f"model '{name}' not found")
    return model


def parse_keep_alive(body: dict[str, Any]) -> int | None:
    try:
        return keep_alive_ns(body.get("keep_alive"))
    except DurationError as exc:
        raise HTTPError(400, str(exc)) from None


def want_options(body: dict[str, Any]) -> dict[str, Any]:
    opts = body.get("options")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise HTTPError(400, "json: cannot unmarshal array into Go struct field .options of "
                        "type map[string]interface {}")
    return opts


def resolve_think(value: Any, model: InstalledModel, name: str) -> bool:
    supported = "thinking" in model.capabilities
    if value is None:
        return supported
    if isinstance(value, bool):
        if value and not supported:
            raise HTTPError(400, f'"{name}" does not support thinking')
        return value
    if isinstance(value, str) and value in ("low", "medium", "high"):
        if not supported:
            raise HTTPError(400, f'"{name}" does not support thinking')
        raise HTTPError(400, f'think value "{value}" is not supported for this model')
    raise HTTPError(400, f'invalid think value: "{value}" (must be "high", "medium", "low", '
                    'true, or false)')


def check_tools(body: dict[str, Any], model: InstalledModel) -> None:
    if body.get("tools") and "tools" not in model.capabilities:
        raise HTTPError(400, f"{model.name.full} does not support tools")


def pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The simulated model calls a tool when the last user message names it."""
    tools = body.get("tools") or []
    if not messages or messages[-1].get("role") != "user":
        return None
    text = content_text(messages[-1].get("content"))
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name") and fn["name"] in text:
            params = fn.get("parameters") or {}
            args = {key: "value" for key in params.get("required") or []}
            return {"name": fn["name"], "arguments": args}
    return None


def tool_call_id() -> str:
    return "call_" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=8))


def check_generative(model: InstalledModel, name: str, what: str) -> None:
    if "completion" not in model.capabilities:
        raise HTTPError(400, f'"{name}" does not support {what}')


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI parts / Anthropic blocks
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def check_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        return []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise HTTPError(400, "json: cannot unmarshal object into Go struct field "
                        "ChatRequest.messages of type []api.Message")
    for m in messages:
        if m.get("content") is not None and not isinstance(m["content"], str):
            raise HTTPError(400, "json: cannot unmarshal array into Go struct field "
                            "Message.messages.content of type string")
    return messages


ANSWER_JOIN = " "  # what render_chat puts between "assistant:" and a resent answer


def render_chat(model: InstalledModel, messages: list[dict[str, Any]]) -> str:
    """A stable text rendering of the conversation (the prefix the KV cache can reuse)."""
    msgs = list(model.messages) + list(messages)
    parts: list[str] = []
    if model.system and not (messages and messages[0].get("role") == "system"):
        parts.append(f"system: {model.system}\n")
    for m in msgs:
        role = str(m.get('role', 'user')).lower()
        parts.append(f"{role}:{ANSWER_JOIN}{content_text(m.get('content'))}\n")
    parts.append("assistant:")
    return "".join(parts)


def render_generate(model: InstalledModel, prompt: str, system: str | None,
                    raw: bool) -> str:
    if raw:
        return prompt
    sys_text = model.system if system is None else system
    head = f"system: {sys_text}\n" if sys_text else ""
    return f"{head}user: {prompt}\nassistant:"


def embedding(text: str, dims: int, *, normalise: bool = True) -> list[float]:
    rng = random.Random(zlib.crc32(text.encode()))
    vec = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    if normalise:
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        vec = [v / norm for v in vec]
    return [float(f"{v:.7g}") for v in vec]
