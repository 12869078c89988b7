"""A local GGUF file: hashed once, uploaded only where the blob is missing, then created."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.targets.ollama import hashing as ollama

from .conftest import add_nodes, apply, desired, failures, plan

MODEL = """
[models."tiny:1b"]
gguf = "tiny.gguf"
parameters = { num_ctx = 2048, stop = ["</s>"] }
system = "You are tiny."
template = "{{ .System }} [INST] {{ .Prompt }} [/INST]"
keep_loaded = true
"""


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


async def test_gguf_is_hashed_once_and_uploaded_only_where_the_blob_is_missing(
        sim: Any, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Path] = []
    real = ollama._hash_file
    monkeypatch.setattr(ollama, "_hash_file", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(ollama, "_hashes", {})
    fresh, has_blob = await add_nodes(sim, 2)
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    async with httpx.AsyncClient() as http:       # gpu-2 got the blob earlier
        assert (await http.post(f"{has_blob.url}/api/blobs/{digest}", content=gguf.read_bytes())).status_code == 201
    has_blob.clear_requests()
    state = desired([fresh, has_blob], MODEL)
    report = await apply(state, base_dir=gguf.parent)
    assert failures(report) == []
    assert hashed == [gguf]                                    # once for the file, not once per node
    assert [r.path for r in fresh.write_requests()] == [f"/api/blobs/{digest}", "/api/create"]
    assert [r.path for r in has_blob.write_requests()] == ["/api/create"]
    for node in (fresh, has_blob):
        assert node.installed_models() == ["tiny:1b"]
        create = node.write_requests()[-1].body
        assert create["files"] == {"tiny.gguf": digest} and create["parameters"] == {"num_ctx": 2048, "stop": ["</s>"]}
    assert (await plan(state, base_dir=gguf.parent)).changes == ()
    assert hashed == [gguf]


async def test_missing_gguf_file_fails_that_model_only(sim: Any, tmp_path: Path) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], MODEL + '[models."qwq:32b"]\n')
    report = await apply(state, base_dir=tmp_path)
    [failed] = failures(report)       # said by the plan, which leaves the model out: nothing to build it from
    assert str(tmp_path / "tiny.gguf") in failed and "no such file" in failed, failed
    assert report.failed == ()
    assert node.installed_models() == ["qwq:32b"]


async def test_a_replaced_gguf_file_is_uploaded_and_the_model_recreated(sim: Any, gguf: Path) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], MODEL)
    assert failures(await apply(state, base_dir=gguf.parent)) == []
    gguf.write_bytes(b"GGUF" + b"v2" * 1000)
    [change] = (await plan(state, base_dir=gguf.parent)).changes
    assert change.path_text == 'models."tiny:1b".gguf'
    node.clear_requests()
    assert failures(await apply(state, base_dir=gguf.parent)) == []
    assert [r.path for r in node.write_requests()][:2] == [
        "/api/blobs/sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest(), "/api/create"]
    assert (await plan(state, base_dir=gguf.parent)).changes == ()
