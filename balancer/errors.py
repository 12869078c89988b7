"""Balancer errors and the JSON bodies clients get for them.

    BalancerError
    └─ UpstreamError (.node)         one node failed this request (before the first byte
       │                             reached the client, the next candidate is tried)
       ├─ ConnectFailed              refused, unreachable, bad address
       ├─ StreamBroken               reset or closed before the end of the body
       └─ Silence                    no byte for silence_timeout seconds

Requests the balancer answers itself (no node has the model -> 404, every node busy or
no nodes -> 503, every candidate failed -> 502, model management -> 403) are plain
answers built by error_body(), not exceptions; scheduling.Reject carries their status.

Bodies follow the shape the client expects for the path: Ollama's native
{"error": "..."}, the OpenAI envelope under /v1, Anthropic's under /v1/messages.
"""
from __future__ import annotations

import json
import secrets


class BalancerError(Exception):
    pass


class UpstreamError(BalancerError):
    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"node {node}: {message}")
        self.node = node


class ConnectFailed(UpstreamError):
    pass


class StreamBroken(UpstreamError):
    pass


class Silence(UpstreamError):
    pass


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
