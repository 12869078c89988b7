"""Bytes on the wire: JSON bodies the way Go writes them, error envelopes, body decoding."""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from .gofmt import go_json, go_json_error, go_type_name

NATIVE_JSON = "application/json; charset=utf-8"
PLAIN_JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
CHUNK_LIMIT = 2048  # Go's net/http sets Content-Length only below this
RAW: web.RequestKey[bytes] = web.RequestKey("raw", bytes)  # the request body, read once


class HTTPError(Exception):
    """An error answered with the endpoint's error shape before any byte was sent."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # optional error type for the /v1 envelopes


async def send_bytes(request: web.Request, body: bytes, status: int, content_type: str,
                     ) -> web.StreamResponse:
    if len(body) <= CHUNK_LIMIT:
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})
    resp = web.StreamResponse(status=status, headers={"Content-Type": content_type})
    await resp.prepare(request)
    await resp.write(body)
    await resp.write_eof()
    return resp


async def native_json(request: web.Request, obj: Any, status: int = 200,
                      content_type: str = NATIVE_JSON) -> web.StreamResponse:
    """gin c.JSON: compact, no trailing newline."""
    return await send_bytes(request, go_json(obj), status, content_type)


async def encoder_json(request: web.Request, obj: Any, status: int = 200) -> web.StreamResponse:
    """json.Encoder (OpenAI/Anthropic layer): application/json, trailing newline."""
    return await send_bytes(request, go_json(obj) + b"\n", status, PLAIN_JSON)


def empty(status: int = 200) -> web.Response:
    return web.Response(status=status)


def text(body: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
         ) -> web.Response:
    return web.Response(body=body.encode(), status=status, headers={"Content-Type": content_type})


def openai_error_type(status: int) -> str:
    if status == 400:
        return "invalid_request_error"
    if status == 404:
        return "not_found_error"
    return "api_error"


def openai_envelope(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": openai_error_type(status), "param": None,
                      "code": None}}


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                    503: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"),
                                       "message": message},
            "request_id": f"req_{secrets.token_hex(12)}"}


async def error_response(request: web.Request, err: HTTPError) -> web.StreamResponse:
    """The error shape of the endpoint the request went to."""
    path = request.path
    if path.startswith("/v1/messages"):
        return await encoder_json(request, anthropic_error(err.status, err.message), err.status)
    if path.startswith("/v1/"):
        return await encoder_json(request, openai_envelope(err.status, err.message), err.status)
    return await native_json(request, {"error": err.message}, err.status)


class _Pairs(dict[str, Any]):
    """An object with its keys as sent, in order (for the top level: a Go struct)."""
    pairs: list[tuple[str, Any]]


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(pairs)
    obj.pairs = pairs
    return obj


def go_struct(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The request's fields as Go's encoding/json fills a struct: a key matches its field
    case-insensitively (Unicode simple folding: the Kelvin sign is a "k"), a field given twice
    takes the later value, a map or struct given twice is merged, null leaves a string alone."""
    fields: dict[str, Any] = {}
    for key, value in pairs:
        name = "".join(c.casefold() if len(c.casefold()) == 1 else c for c in key)
        old = fields.get(name)
        if isinstance(old, dict) and isinstance(value, dict):
            value = {**old, **value}
        elif value is None and old is not None and not isinstance(old, (dict, list)):
            value = old
        fields[name] = value
    return fields


def decode_body(raw: bytes, struct: str) -> dict[str, Any]:
    """Decode a POST body like the Go handlers (400 on empty or malformed JSON)."""
    if not raw or not raw.strip():
        raise HTTPError(400, "missing request body")
    try:
        body = json.loads(raw, object_pairs_hook=_pairs)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPError(400, go_json_error(raw)) from None
    except RecursionError:
        raise HTTPError(400, "exceeded max depth") from None
    if isinstance(body, _Pairs):
        body = go_struct(body.pairs)
    if not isinstance(body, dict):
        raise HTTPError(400, f"json: cannot unmarshal {go_type_name(body)} into Go value of "
                        f"type api.{struct}")
    return body


def want_str(body: dict[str, Any], key: str, struct: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HTTPError(400, f"json: cannot unmarshal {go_type_name(value)} into Go struct field "
                        f"{struct}.{key} of type string")
    return value


def want_model(body: dict[str, Any], struct: str) -> str:
    """`model`, or the deprecated `name` that the model-management routes still accept."""
    return want_str(body, "model", struct) or want_str(body, "name", struct)


def lenient_str(value: Any) -> str:
    """A string field that the OpenAI and Anthropic handlers read as "" when it is not a string."""
    return value if isinstance(value, str) else ""


def want_stream(body: dict[str, Any], default: bool) -> bool:
    value = body.get("stream")
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(400, f"json: cannot unmarshal {go_type_name(value)} into Go struct field "
                        ".stream of type bool")
    return value


def ndjson_line(obj: Any) -> bytes:
    return go_json(obj) + b"\n"


def sse_data(obj: Any) -> bytes:
    return b"data: " + go_json(obj) + b"\n\n"


def sse_event(event: str, obj: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + go_json(obj) + b"\n\n"
