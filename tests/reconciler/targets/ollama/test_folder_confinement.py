"""`ollama_dir`: files are read only inside the declared folder, and only at the manifest's size."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import PermanentError
from reconciler.targets.ollama import folder as ollama_dir
from simulator import catalogue as cat
from simulator.modelsdir import ModelsFolder, write_model

from .conftest import add_nodes, apply, desired, failures

OUTSIDE = "the administrator's private notes, outside the models folder"


@pytest.fixture
def folder(tmp_path: Path) -> ModelsFolder:
    return write_model(tmp_path / "models", "qwq:32b", system="You are QwQ.")


def _set_layer(folder: ModelsFolder, media_type: str, digest: str, size: int) -> None:
    doc = json.loads(folder.manifest_path.read_bytes())
    for layer in doc["layers"]:
        if layer["mediaType"] == media_type:
            layer["digest"], layer["size"] = digest, size
    folder.manifest_path.write_text(json.dumps(doc))


async def test_a_symlinked_blob_pointing_outside_the_folder_is_refused_and_nothing_sent(
        sim: Any, folder: ModelsFolder, tmp_path: Path) -> None:
    secret = tmp_path / "notes.txt"
    secret.write_text(OUTSIDE)
    digest = "sha256:" + hashlib.sha256(OUTSIDE.encode()).hexdigest()
    (folder.root / "blobs" / digest.replace(":", "-")).symlink_to(secret)
    _set_layer(folder, cat.MT_SYSTEM, digest, len(OUTSIDE))     # digest and size are right

    with pytest.raises(PermanentError, match="outside the models folder"):
        ollama_dir.read_folder(folder.root, "qwq:32b")
    [node] = await add_nodes(sim, 1)
    report = await apply(desired([node], '[models."qwq:32b"]\nollama_dir = "models"\n'), base_dir=tmp_path)
    [failed] = failures(report)
    assert "outside the models folder" in failed and OUTSIDE not in failed
    assert node.write_requests() == []


def test_a_digest_with_dots_cannot_walk_out_of_the_folder(folder: ModelsFolder, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text(OUTSIDE)
    (folder.root / "blobs" / "sha256-..").mkdir()
    _set_layer(folder, cat.MT_SYSTEM, "sha256:../../../../outside.txt", len(OUTSIDE))
    with pytest.raises(PermanentError, match="not a digest") as caught:
        ollama_dir.read_folder(folder.root, "qwq:32b")
    assert OUTSIDE not in str(caught.value)


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256-" + "a" * 64, "sha256:" + "a" * 63,
                                    "sha256:" + "a" * 64 + "\n"])
def test_only_an_exact_sha256_digest_is_accepted(folder: ModelsFolder, digest: str) -> None:
    _set_layer(folder, cat.MT_SYSTEM, digest, 5)
    with pytest.raises(PermanentError, match="not a digest"):
        ollama_dir.read_folder(folder.root, "qwq:32b")


def test_a_small_text_layer_that_is_huge_on_disk_is_refused_by_its_size_before_reading(
        folder: ModelsFolder) -> None:
    [system] = folder.of_type(cat.MT_SYSTEM)
    path = folder.blob_path(system)
    with path.open("r+b") as f:          # sparse: 1 GB on disk, no real space used
        f.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(PermanentError, match=f"is {1 << 30} bytes, the manifest says {system.size}"):
            ollama_dir.read_folder(folder.root, "qwq:32b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_huge_manifest_is_not_read(folder: ModelsFolder) -> None:
    with folder.manifest_path.open("r+b") as f:
        f.truncate(256 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(PermanentError, match="not an Ollama manifest"):
            ollama_dir.read_folder(folder.root, "qwq:32b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_symlink_inside_the_folder_still_works(folder: ModelsFolder) -> None:
    [system] = folder.of_type(cat.MT_SYSTEM)
    path = folder.blob_path(system)
    moved = folder.root / "blobs" / "kept-here"
    path.rename(moved)
    path.symlink_to(moved)
    assert ollama_dir.read_folder(folder.root, "qwq:32b").system == "You are QwQ."
