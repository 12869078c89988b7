"""Pure request classification: method, path, body -> RequestInfo.

No I/O. The proxy uses the result to decide how to route (model-aware, fleet-wide,
refused, plain passthrough) and how to tell a complete stream from a broken one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from .conversation import Conversation, conversation_of
from .tasks import TaskIdent, task_kind

Kind = Literal["inference", "model_info", "listing", "management", "other"]
Framing = Literal["ndjson", "openai", "responses", "anthropic", "none"]

INFERENCE_PATHS: dict[str, Framing] = {
    "/api/chat": "ndjson",
    "/api/generate": "ndjson",
    "/api/embed": "none",
    "/api/embeddings": "none",
    "/v1/chat/completions": "openai",
    "/v1/completions": "openai",
    "/v1/embeddings": "none",
    "/v1/responses": "responses",
    "/v1/messages": "anthropic",
}
CHAT_PATHS = frozenset({"/api/chat", "/v1/chat/completions"})  # where Open WebUI sends tasks
LISTING_PATHS = frozenset({"/api/tags", "/api/ps", "/v1/models"})
MANAGEMENT_PATHS = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})


@dataclass(frozen=True)
class RequestInfo:
    kind: Kind
    path: str
    model: str | None = None  # normalised name ("qwq" -> "qwq:latest")
    model_as_sent: str | None = None
    uses_slot: bool = False  # counts against a node's max_concurrent
    framing: Framing = "none"
    stream: bool = False
    conversation: Conversation | None = None  # for KV-cache affinity
    task: str | None = None  # an Open WebUI background task (tasks.py): its kind

    @property
    def person(self) -> bool:
        return self.task is None

    def __str__(self) -> str:  # for log lines
        return f"{self.path} {self.model_as_sent}" if self.model_as_sent else self.path


DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NS = "library"


def listed_name(name: str) -> str:
    """The name as Ollama lists it in /api/tags (and Open WebUI's Ollama connection after it):
    normalize_model's form with the declared letter case kept. "codestral-30k" →
    "codestral-30k:latest"; "registry.ollama.ai/library/QwQ:32b" → "QwQ:32b"."""
    parts = name.strip().split("/")
    model = parts[-1] if ":" in parts[-1] else parts[-1] + ":latest"
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NS
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    if host.lower() != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}"
    if namespace.lower() != DEFAULT_NS:
        return f"{namespace}/{model}"
    return model


def normalize_model(name: str) -> str:
    """Ollama's identity of a model name, the shortest lower-case form it lists (ollama-api.md §0).
    `[host/][namespace/]model[:tag]` is read from the right, so two parts are namespace/model and
    only a third part is a host; the default host is dropped, then the default namespace (kept
    under another host); the tag is always present; lookup ignores case.
    "QWQ" → "qwq:latest"; "registry.ollama.ai/library/qwq:32b" → "qwq:32b";
    "registry.ollama.ai/qwq" → "registry.ollama.ai/qwq:latest" (a namespace, not the host)."""
    return listed_name(name).lower()


def _parse(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_of(data: dict[str, Any]) -> str | None:
    model = data.get("model") or data.get("name")
    return model if isinstance(model, str) and model else None


def is_management(method: str, path: str) -> bool:
    if path in MANAGEMENT_PATHS:
        return method not in ("GET", "HEAD", "OPTIONS")
    return path.startswith("/api/blobs/") and method in ("POST", "PUT")


def classify(method: str, path: str, body: bytes = b"",
             parsed: dict[str, Any] | None = None, tasks: TaskIdent | None = None) -> RequestInfo:
    """`parsed`: the body's JSON object when the caller has decoded it already; `tasks`: how
    to tell Open WebUI's task requests (None: every request is a person's)."""
    method = method.upper()
    if is_management(method, path):
        return RequestInfo("management", path)
    if method in ("GET", "HEAD") and path in LISTING_PATHS:
        return RequestInfo("listing", path)
    if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
        name = path[len("/v1/models/"):]
        return RequestInfo("model_info", path, normalize_model(name), name)
    if method == "POST" and path == "/api/show":
        sent = _model_of(_parse(body) if parsed is None else parsed)
        return RequestInfo("model_info", path, sent and normalize_model(sent), sent)
    if method == "POST" and path in INFERENCE_PATHS:
        data = _parse(body) if parsed is None else parsed
        sent = _model_of(data)
        model = normalize_model(sent) if sent else None
        framing = INFERENCE_PATHS[path]
        stream = framing != "none" and bool(data.get("stream", framing == "ndjson"))
        return RequestInfo(
            "inference", path, model, sent, uses_slot=True,
            framing=framing if stream else "none", stream=stream,
            conversation=conversation_of(path, model, data),
            task=task_kind(tasks, model, data) if tasks is not None and path in CHAT_PATHS else None,
        )
    # Anything else passes through; an unknown POST may start GPU work, so it takes a slot.
    return RequestInfo("other", path, uses_slot=method not in ("GET", "HEAD", "OPTIONS"))
