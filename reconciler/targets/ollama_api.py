"""A typed async client for one Ollama node's REST API, and pure parsers of its answers.

This is the only module that catches httpx errors: each one becomes a TemporaryError (the node
may answer next time) or a PermanentError (it will not), chained with `from exc`. A management
stream (pull, create) fails on any {"error": ...} line, even under HTTP 200, and on an end
without {"status": "success"}; the error carries Ollama's own message.
"""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from balancer.classify import normalize_model
from reconciler.config.params import INT_PARAMS, PARAMS
from reconciler.errors import PermanentError, TemporaryError
from reconciler.targets.deadline import Deadline

StatusCallback = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- names

# one rule for the reconciler and the balancer, which must agree on what a node holds
model_key = normalize_model


# ---------------------------------------------------------------- parsed answers

@dataclass(frozen=True)
class TagEntry:
    name: str
    digest: str          # 64 hex, no "sha256:" prefix
    size: int = 0
    modified_at: str = ""


@dataclass(frozen=True)
class PsEntry:
    name: str
    digest: str
    expires_at: datetime | None = None
    size_vram: int = 0
    context_length: int = 0


@dataclass(frozen=True)
class ShowInfo:
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    system: str = ""
    parent_model: str = ""
    capabilities: tuple[str, ...] = ()
    weights: str = ""    # hex digest of the weights blob (from the modelfile's FROM line)


def parse_tags(data: Any) -> list[TagEntry]:
    """`GET /api/tags` → installed models."""
    out = []
    for m in (data or {}).get("models") or []:
        name = m.get("name") or m.get("model") or ""
        digest = str(m.get("digest") or "").removeprefix("sha256:")
        out.append(TagEntry(name, digest, int(m.get("size") or 0), str(m.get("modified_at") or "")))
    return out


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(text: str) -> datetime | None:
    """Go RFC3339Nano → aware datetime (nanoseconds cut to microseconds)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None


def parse_ps(data: Any) -> list[PsEntry]:
    """`GET /api/ps` → runners in memory."""
    out = []
    for m in (data or {}).get("models") or []:
        out.append(PsEntry(m.get("name") or m.get("model") or "",
                           str(m.get("digest") or "").removeprefix("sha256:"),
                           parse_time(str(m.get("expires_at") or "")),
                           int(m.get("size_vram") or 0), int(m.get("context_length") or 0)))
    return out


_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|[abfnrtv\\"\'])')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", '"': '"', "'": "'"}


def go_unquote(raw: str) -> str:
    """A Go %#v / strconv.Quote string literal → its text."""
    body = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        return _SIMPLE[e]

    return _GO_ESCAPE.sub(one, body)


def parse_value(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith('"'):
        return go_unquote(raw)
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


def parse_show_parameters(text: str) -> dict[str, Any]:
    """The `parameters` text of `/api/show` ("%-30s %#v" lines, random order, one line per
    list element) → {key: value}; numbers as float, list-typed parameters as lists."""
    out: dict[str, Any] = {}
    for line in (text or "").splitlines():
        bits = line.strip().split(None, 1)
        if len(bits) != 2:
            continue
        key, value = bits[0], parse_value(bits[1])
        if key in INT_PARAMS and isinstance(value, float) and value.is_integer():
            value = int(value)
        if PARAMS.get(key) is not None and PARAMS[key].kind == "strings":
            out.setdefault(key, []).append(value)
        elif key in out:
            old = out[key]
            out[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            out[key] = value
    return out


_FROM_BLOB = re.compile(r"^FROM\s+\S*sha256[-:]([0-9a-f]{64})\s*$", re.M)


def parse_show(data: Any) -> ShowInfo:
    """`POST /api/show` → what the reconciler compares."""
    data = data or {}
    details = data.get("details") or {}
    found = _FROM_BLOB.search(data.get("modelfile") or "")
    return ShowInfo(parse_show_parameters(data.get("parameters") or ""), data.get("template") or "",
                    data.get("system") or "", details.get("parent_model") or "",
                    tuple(data.get("capabilities") or ()), found.group(1) if found else "")


def same_value(a: Any, b: Any) -> bool:
    """Compare parameter values the way Ollama means them: 1e+06 == 1000000, 0.1 == 0.1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return bool(a == b)


def to_wire(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as Ollama wants them in JSON: int-typed options as ints."""
    return {k: int(v) if k in INT_PARAMS and isinstance(v, float) and v.is_integer() else v
            for k, v in params.items()}


# ---------------------------------------------------------------- streams

@dataclass
class PullProgress:
    """Sums `completed`/`total` over distinct digests of a pull (or create-with-pull) stream."""

    totals: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    status: str = ""

    def feed(self, line: dict[str, Any]) -> None:
        self.status = str(line.get("status") or self.status)
        digest = line.get("digest")
        if digest and line.get("total"):
            self.totals[digest] = int(line["total"])
            self.done[digest] = max(self.done.get(digest, 0), int(line.get("completed") or 0))

    @property
    def completed(self) -> int:
        return sum(self.done.values())

    @property
    def total(self) -> int | None:
        return sum(self.totals.values()) or None


def stream_failure(lines: list[dict[str, Any]]) -> str | None:
    """None when an NDJSON management stream ended well, else Ollama's message. A stream
    fails on any line with "error", or when it ends without {"status":"success"} last."""
    for line in lines:
        if "error" in line:
            return str(line["error"])
    if not lines or lines[-1].get("status") != "success":
        last = lines[-1].get("status") if lines else None
        return f"the stream ended before success (last status: {last!r})" if last else "the stream ended without an answer"
    return None


# ---------------------------------------------------------------- the client

_PERMANENT_HINTS = ("file does not exist", "invalid model name", "not in gguf format", "invalid digest",
                    "file path must be relative", "must be of type", "does not support")


def _classify(message: str, status: int = 0) -> type[TemporaryError] | type[PermanentError]:
    low = message.lower()
    if any(h in low for h in _PERMANENT_HINTS):
        return PermanentError
    if 400 <= status < 500 and status not in (404, 408, 429):
        return PermanentError
    return TemporaryError


def _error_text(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content or b"{}")
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    text = (response.content or b"").decode("utf-8", "replace").strip()
    return text[:200] or f"HTTP {response.status_code}"


_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every node: loading the CA bundle costs ~15 ms each time."""
    global _tls
    if _tls is None:
        import certifi

        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


class OllamaClient:
    """One node. `timeout` bounds each connect and read of a quick call, and twice `timeout` the
    whole call, whatever the server sends. `stream_timeout` is the longest a pull, create or
    upload may go without progress (a new status line, a chunk sent), and the longest a model
    load may take (twice that for the whole load call)."""

    def __init__(self, url: str, *, name: str = "", timeout: float = 10.0, stream_timeout: float = 600.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._http = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(timeout), transport=transport,
                                       trust_env=False, verify=tls_context())

    async def close(self) -> None:
        await self._http.aclose()

    def _fail(self, exc: httpx.HTTPError, what: str) -> TemporaryError | PermanentError:
        if isinstance(exc, httpx.ConnectError):
            text = f"unreachable: cannot connect to {self.url} ({exc or 'connection refused'})"
        elif isinstance(exc, httpx.ConnectTimeout):
            text = f"unreachable: no connection to {self.url} within {self.timeout:g} s"
        elif isinstance(exc, httpx.TimeoutException):
            text = f"{self.url} did not answer {what} in time ({type(exc).__name__})"
        elif isinstance(exc, httpx.RemoteProtocolError):
            text = f"{self.url} dropped the connection during {what}: {exc}"
        else:
            text = f"{what} to {self.url} failed: {type(exc).__name__}: {exc}"
        return TemporaryError(text, target=self.name)

    def _late(self, deadline: Deadline, what: str) -> TemporaryError:
        return TemporaryError(f"{self.url} did not answer {what} in time: {deadline.expired_text()}",
                              target=self.name)

    async def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,),
                       timeout: float | None = None, **kw: Any) -> httpx.Response:
        what = f"{method} {path}"
        per_read = timeout or self.timeout
        upload = kw.get("content") is not None      # bounded by progress, not in total
        deadline = Deadline(idle=per_read) if upload else Deadline(total=2 * per_read)
        if upload:
            kw["content"] = _progressing(kw["content"], deadline)
        try:
            async with deadline:
                response = await self._http.request(method, path, timeout=per_read, **kw)
        except TimeoutError as exc:      # the deadline; httpx's own timeouts are HTTPErrors
            raise self._late(deadline, what) from exc
        except httpx.HTTPError as exc:
            raise self._fail(exc, what) from exc
        if response.status_code not in ok:
            message = _error_text(response)
            cls = _classify(message, response.status_code)
            raise cls(f"{what}: {response.status_code} {message}", target=self.name)
        return response

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = await self._request(method, path, **kw)
        try:
            return response.json()
        except ValueError as exc:
            raise TemporaryError(f"{method} {path}: not JSON: {response.text[:100]!r}", target=self.name) from exc

    # reads
    async def version(self) -> str:
        return str((await self._json("GET", "/api/version")).get("version", ""))

    async def tags(self) -> list[TagEntry]:
        return parse_tags(await self._json("GET", "/api/tags"))

    async def ps(self) -> list[PsEntry]:
        return parse_ps(await self._json("GET", "/api/ps"))

    async def show(self, model: str) -> ShowInfo | None:
        """None when the node does not have the model."""
        response = await self._request("POST", "/api/show", json={"model": model}, ok=(200, 404))
        if response.status_code == 404:
            return None
        return parse_show(response.json())

    async def has_blob(self, digest: str) -> bool:
        response = await self._request("HEAD", f"/api/blobs/{digest}", ok=(200, 404))
        return response.status_code == 200

    # writes
    async def _stream(self, path: str, body: dict[str, Any], on_line: StatusCallback | None) -> None:
        what = f"POST {path} {body.get('model', '')}".strip()
        last: dict[str, Any] | None = None   # a multi-GB pull sends ~1e5 lines: keep only the last one
        timeout = httpx.Timeout(self.timeout, read=self.stream_timeout)
        deadline = Deadline(idle=self.stream_timeout)   # a trickle of bytes is not progress: a new line is
        try:
            async with deadline, self._http.stream("POST", path, json=body, timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    message = _error_text(response)
                    raise _classify(message, response.status_code)(f"{what}: {response.status_code} {message}",
                                                                   target=self.name)
                async for raw in response.aiter_lines():
                    if not raw.strip():
                        continue
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(line, dict):
                        continue
                    if line != last:
                        deadline.progress()
                    last = line
                    if "error" in line:         # the first error ends the read, so it is the last line
                        break
                    if on_line:
                        on_line(line)
        except TimeoutError as exc:
            raise self._late(deadline, what) from exc
        except httpx.HTTPError as exc:
            raise self._fail(exc, what) from exc
        failure = stream_failure([] if last is None else [last])
        if failure is not None:
            raise _classify(failure)(f"{what}: {failure}", target=self.name)

    async def pull(self, model: str, *, insecure: bool = False, on_line: StatusCallback | None = None) -> None:
        body: dict[str, Any] = {"model": model, "stream": True}
        if insecure:
            body["insecure"] = True
        await self._stream("/api/pull", body, on_line)

    async def create(self, body: dict[str, Any], on_line: StatusCallback | None = None) -> None:
        await self._stream("/api/create", {**body, "stream": True}, on_line)

    async def copy(self, source: str, destination: str) -> None:
        await self._request("POST", "/api/copy", json={"source": source, "destination": destination})

    async def delete(self, model: str) -> bool:
        """False when the model was already gone."""
        response = await self._request("DELETE", "/api/delete", json={"model": model}, ok=(200, 404))
        return response.status_code == 200

    async def push_blob(self, digest: str, chunks: AsyncIterator[bytes], size: int) -> None:
        await self._request("POST", f"/api/blobs/{digest}", ok=(200, 201), content=chunks,
                            headers={"Content-Length": str(size)}, timeout=self.stream_timeout)

    async def load(self, model: str, *, embedding: bool = False, options: dict[str, Any] | None = None) -> None:
        """Load `model` with `options` (num_ctx, ...) and pin it in memory (keep_alive -1)."""
        path = "/api/embed" if embedding else "/api/generate"
        body: dict[str, Any] = {"model": model, "keep_alive": -1}
        if options:
            body["options"] = to_wire(options)
        if not embedding:
            body["stream"] = False
        await self._request("POST", path, json=body, timeout=self.stream_timeout)


async def _progressing(chunks: AsyncIterator[bytes], deadline: Deadline) -> AsyncIterator[bytes]:
    """An upload body that tells `deadline` each time a chunk was taken (the socket moved on)."""
    async for chunk in chunks:
        yield chunk
        deadline.progress()
