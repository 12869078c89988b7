"""A typed async client for one Ollama node's REST API: the only I/O with a node.

This is the only module that catches httpx errors: each one becomes a TemporaryError (the node
may answer next time) or a PermanentError (it will not), chained with `from exc`. A management
stream (pull, create) fails on any {"error": ...} line, even under HTTP 200, and on an end
without {"status": "success"}; the error carries Ollama's own message. The answers are parsed
by facts.py.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from reconciler.errors import PermanentError, TemporaryError
from reconciler.scrub import cut
from reconciler.targets.deadline import Deadline
from reconciler.targets.ollama.facts import (PsEntry, ShowInfo, TagEntry, parse_ps, parse_show,
                                             parse_tags, stream_failure)

StatusCallback = Callable[[dict[str, Any]], None]


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
    return cut(text, 200) or f"HTTP {response.status_code}"


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
            raise TemporaryError(f"{method} {path}: not JSON: {cut(response.text, 100)!r}", target=self.name) from exc

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


async def _progressing(chunks: AsyncIterator[bytes], deadline: Deadline) -> AsyncIterator[bytes]:
    """An upload body that tells `deadline` each time a chunk was taken (the socket moved on)."""
    async for chunk in chunks:
        yield chunk
        deadline.progress()
