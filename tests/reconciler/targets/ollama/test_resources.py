"""Long transfers hold no more than they must: a pull's progress lines are not kept, and a
failed GGUF upload closes its file at once."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.errors import TemporaryError
from reconciler.plan import engine
from reconciler.targets.ollama import OllamaNode, node_targets
from reconciler.targets.ollama.client import OllamaClient

from .conftest import FAST, add_nodes, desired

LINES = 20_000      # a multi-GB pull sends about this many progress lines


def _pull_answer(last: dict[str, Any]) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        digest = "sha256:" + "ab" * 32
        for i in range(LINES):
            yield (json.dumps({"status": f"pulling {digest[7:19]}", "digest": digest, "total": 10**10,
                               "completed": i * 500_000}) + "\n").encode()
        yield (json.dumps(last) + "\n").encode()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/x-ndjson"}, content=body())

    return httpx.MockTransport(handler)


async def _peak_bytes_of_pull(last: dict[str, Any]) -> int:
    client = OllamaClient("http://127.0.0.1:1", transport=_pull_answer(last))
    tracemalloc.start()
    try:
        await client.pull("qwq:32b")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await client.close()


async def test_a_long_pull_keeps_only_its_last_line() -> None:
    peak = await _peak_bytes_of_pull({"status": "success"})
    assert peak < 2_000_000, f"{peak} bytes held while reading {LINES} progress lines"


async def test_a_long_pull_ending_without_success_still_fails() -> None:
    with pytest.raises(TemporaryError, match="before success"):
        await _peak_bytes_of_pull({"status": "verifying sha256 digest"})


def _open_files() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return out


class DropUpload(httpx.AsyncBaseTransport):
    """The real node, except that a blob upload breaks after its first chunk (a dropped link)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/api/blobs/"):
            async for _ in request.stream:  # type: ignore[union-attr]
                raise httpx.WriteError("connection reset by peer", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Watch:
    """Progress that notes, when the upload is reported failed, whether the GGUF is still open."""

    def __init__(self, path: Path) -> None:
        self.path = str(path.resolve())
        self.open_when_failed: bool | None = None

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        pass

    def done(self, task: str, status: str = "") -> None:
        if status == "failed":
            self.open_when_failed = self.path in _open_files()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
async def test_a_failed_upload_closes_the_gguf_file_at_once(sim: Any, tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(3 << 20))         # several chunks: the read stops midway
    [node] = await add_nodes(sim, 1)
    state = desired([node], '[models."tiny:1b"]\ngguf = "tiny.gguf"\n')
    [plain] = node_targets(state, base_dir=tmp_path)
    await plain.close()
    target = OllamaNode(plain.wanted, node.url, transport=DropUpload(), **FAST)
    watch = Watch(gguf)
    try:
        report = await engine.apply(await engine.plan([target]), [target], progress=watch)
    finally:
        await target.close()
    assert [r.change.key for r in report.failed][:1] and "connection reset" in report.failed[0].message
    assert watch.open_when_failed is False
    assert node.installed_models() == []
