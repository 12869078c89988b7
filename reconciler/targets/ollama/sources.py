"""Whether a model's local source can be read: a GGUF file, a copied models folder.

The one check both `validate` (which touches no node) and every plan (for the models a node
must get) run, so a disk not mounted, a folder copied half, a manifest that is not JSON or a
blob that is missing is an error before anything is sent, not a clean `+ create` that fails
in `apply`. Reads only manifests and text layers, and the sizes of the big blobs (their
sha256 is computed once, before an upload)."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.config.problems import Problem
from reconciler.config.schema import DesiredState
from reconciler.errors import PermanentError
from reconciler.targets.ollama.folder import read_folder


def source_problem(name: str, gguf: Path | None, ollama_dir: Path | None) -> str | None:
    """What stops the model `name` from being built from its local source; None when it can be."""
    if gguf is not None:
        if not gguf.exists():
            return f"{gguf}: no such file (is the disk mounted?)"
        if not gguf.is_file():
            return f"{gguf} is not a file: expected a GGUF model file"
        try:
            with gguf.open("rb"):
                pass
        except OSError as exc:
            return f"{gguf}: cannot read ({exc.strerror})"
    if ollama_dir is not None:
        try:
            folder = read_folder(ollama_dir, name)
            for blob in folder.blobs:
                size = os.path.getsize(blob.path)
                if size != blob.size:
                    return (f"{blob.path} is {size} bytes, the manifest says {blob.size}: truncated "
                            "(copy it again)")
        except (PermanentError, OSError) as exc:
            return str(exc)
    return None


def check_sources(file: str, state: DesiredState) -> list[Problem]:
    """`validate`'s check of every declared GGUF file and models folder."""
    out = []
    for name, model in state.models.items():
        gguf = state.resolve_path(model.gguf) if model.gguf is not None else None
        folder = state.resolve_path(model.ollama_dir) if model.ollama_dir is not None else None
        problem = source_problem(name, gguf, folder)
        if problem is not None:
            out.append(Problem(file, ("models", name, "gguf" if gguf is not None else "ollama_dir"), problem))
    return out
