"""A local GGUF file: hashed once, uploaded only where the blob is missing, then created."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from reconciler.targets import ollama
from reconciler.targets.ollama_api import OllamaClient

from .conftest import add_nodes, apply, desired, failures, plan

MODEL = """
[models."tiny:1b"]
gguf = "tiny.gguf"
parameters = { num_ctx = 2048, stop = ["</s>"] }
system = "You are tiny."
"""


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


async def test_gguf_is_uploaded_once_per_node_and_skipped_when_present(sim: Any, gguf: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Path] = []
    real = ollama._hash_file
    monkeypatch.setattr(ollama, "_hash_file", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(ollama, "_hashes", {})
    nodes = await add_nodes(sim, 2)
    state = desired(nodes, MODEL)
    report = await apply(state, base_dir=gguf.parent)
    assert failures(report) == []
    assert hashed == [gguf]                                    # once for the file, not once per node
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    for node in nodes:
        assert [r.path for r in node.write_requests()] == [f"/api/blobs/{digest}", "/api/create"]
        assert node.installed_models() == ["tiny:1b"]
    assert (await plan(state, base_dir=gguf.parent)).changes == ()

    # the model goes, the blob stays: the next create needs no upload
    client = OllamaClient(nodes[0].url)
    await client.delete("tiny:1b")
    await client.close()
    nodes[0].clear_requests()
    report = await apply(state, base_dir=gguf.parent)
    assert failures(report) == []
    assert [r.path for r in nodes[0].write_requests()] == ["/api/create"]
    assert hashed == [gguf]


async def test_missing_gguf_file_fails_that_model_only(sim: Any, tmp_path: Path) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], MODEL + '[models."qwq:32b"]\n')
    report = await apply(state, base_dir=tmp_path)
    [failed] = report.failed
    assert "cannot read the GGUF file" in failed.message
    assert node.installed_models() == ["qwq:32b"]
