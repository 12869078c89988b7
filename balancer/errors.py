"""Balancer errors and the JSON bodies clients get for them.

    BalancerError
    ├─ NoNodeAvailable (.reason: no_model | all_busy | no_nodes | exhausted)  -> 404 / 503 / 502
    ├─ UpstreamError (.node)                one node failed this request
    │  ├─ ConnectFailed                     before the first byte: the next candidate is tried
    │  ├─ StreamBroken                      reset, closed early, or no end marker
    │  └─ Silence                           no byte for silence_timeout seconds
    └─ ManagementRefused                    -> 403

Bodies follow the shape the client expects for the path: Ollama's native
{"error": "..."}, the OpenAI envelope under /v1, Anthropic's under /v1/messages.
"""
from __future__ import annotations

import json
import secrets


class BalancerError(Exception):
    status = 500


class NoNodeAvailable(BalancerError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class UpstreamError(BalancerError):
    status = 502

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"node {node}: {message}")
        self.node = node


class ConnectFailed(UpstreamError):
    pass


class StreamBroken(UpstreamError):
    pass


class Silence(UpstreamError):
    pass


class ManagementRefused(BalancerError):
    status = 403


_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 403: "permission_error",
                    503: "overloaded_error"}


def error_body(path: str, status: int, message: str) -> tuple[bytes, str]:
    """(body, content type) for an error the balancer itself answers."""
    if path.startswith("/v1/messages"):
        obj = {"type": "error",
               "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
               "request_id": "req_" + secrets.token_hex(12)}
        return json.dumps(obj).encode() + b"\n", "application/json"
    if path.startswith("/v1/"):
        obj = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"),
                         "param": None, "code": None}}
        return json.dumps(obj).encode() + b"\n", "application/json"
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    return body, "application/json; charset=utf-8"


def not_found_message(path: str, model: str) -> str:
    """Ollama's own wording for an unknown model on this path."""
    if path in ("/api/embed", "/api/embeddings"):
        return f'model "{model}" not found, try pulling it first'
    return f"model '{model}' not found"
