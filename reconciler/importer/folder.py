"""`ollafleet import --ollama-dir FOLDER`: tell which node models were made from a copied models folder.

A model created from uploaded files shows no installed parent, only its weights blob. When a
folder given on the command line holds a manifest of the same name with those weights, the
model is declared `ollama_dir = FOLDER`, with only what differs from the folder's own values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.targets.same import same
from reconciler.targets.ollama.facts import ShowInfo, model_key
from reconciler.targets.ollama.folder import FolderModel, models_root, read_folder


@dataclass(frozen=True)
class FolderEntry:
    folder: str          # absolute, as the file will say it
    name: str            # the model's name in the folder
    model: FolderModel


Folders = dict[str, list[FolderEntry]]     # weights digest (64 hex) → the folder models with them


def _name(host: str, namespace: str, model: str, tag: str) -> str:
    if host.lower() == "registry.ollama.ai":
        return f"{model}:{tag}" if namespace.lower() == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def index_folders(folders: list[str]) -> tuple[Folders, list[str]]:
    """Every model of every folder, by weights digest; and a warning per folder or model unreadable."""
    out: Folders = {}
    warn: list[str] = []
    for given in folders:
        folder = Path(given).expanduser().resolve()
        try:
            root = models_root(folder)
        except PermanentError as exc:
            warn.append(f"--ollama-dir: {exc}")
            continue
        for path in sorted((root / "manifests").glob("*/*/*/*")):
            if not path.is_file():
                continue
            name = _name(*path.relative_to(root / "manifests").parts)
            try:
                model = read_folder(folder, name)
            except (PermanentError, OSError) as exc:
                warn.append(f"--ollama-dir: {name}: {exc}")
                continue
            out.setdefault(model.weights.digest, []).append(FolderEntry(str(folder), name, model))
    return out, warn


def overrides(show: ShowInfo, model: FolderModel) -> tuple[dict[str, Any], str | None, str | None, list[str]]:
    """Parameters, system and template the node's model sets beyond the folder's; what cannot be said."""
    params = {k: v for k, v in show.parameters.items()
              if k not in dict(model.parameters) or not same(v, dict(model.parameters)[k])}
    dropped = [k for k in dict(model.parameters) if k not in show.parameters]
    system = show.system if show.system != (model.system or "") else None
    template = show.template if show.template != (model.template or "") else None
    return params, system, template, dropped


def match(folders: Folders, name: str, show: ShowInfo) -> tuple[FolderEntry | None, list[FolderEntry]]:
    """The folder model with this name and these weights, else the ones with these weights only."""
    entries = folders.get(show.weights, []) if show.weights else []
    same = [e for e in entries if model_key(e.name) == model_key(name)]
    return (same[0] if same else None), entries
