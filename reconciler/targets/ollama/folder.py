"""A model from a copied Ollama models folder (`ollama_dir`): read, verify, upload, create.

The folder is what `ollama pull` leaves on a PC with internet: `manifests/<host>/<namespace>/
<model>/<tag>` (JSON) and `blobs/sha256-<hex>` (or `sha256:<hex>`, as Ollama before 0.1.30
named them on Linux). The model is found by its declared name under any registry host.

    read_folder(folder, name) -> FolderModel      manifest + text layers, checked; no big reads

Every file is read only inside the declared folder (a symlink may point within it, never out
of it; a digest must be `sha256:` and 64 hex digits) and only after its size on disk matches
what the manifest says: a copied folder is data, never a way to read the rest of the disk.
    await verify(model)                            every big blob's size and sha256 (once per file)
    create_body(model, declared) -> dict           /api/create: files, adapters, template, ...
    expected(model, declared) -> WantedModel       what the built model must show (for the diff)
    await upload_missing(api, model, ...)          HEAD each blob, POST only the missing ones
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError, TargetError
from reconciler.targets.base import Progress
from reconciler.targets.ollama.client import OllamaClient
from reconciler.targets.ollama.diff import WantedModel
from reconciler.targets.ollama.hashing import file_sha256

MT = "application/vnd.ollama.image."
WEIGHTS, PROJECTOR, ADAPTER = MT + "model", MT + "projector", MT + "adapter"
TEXTS = {MT + "template", MT + "system", MT + "params", MT + "license", MT + "messages", MT + "prompt"}
DEFAULT_HOST, DEFAULT_NS = "registry.ollama.ai", "library"
CHUNK = 1 << 20
_TEXT_LIMIT = 16 << 20     # a text layer larger than this is not one Ollama wrote
_MANIFEST_LIMIT = 1 << 20  # Ollama's manifests are a few kB
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class FolderBlob:
    media_type: str
    digest: str          # 64 hex
    size: int
    path: Path


@dataclass(frozen=True)
class FolderModel:
    name: str
    manifest: Path
    blobs: tuple[FolderBlob, ...]          # weights, projectors, adapters: uploaded to each node
    template: str | None = None
    system: str | None = None
    parameters: tuple[tuple[str, Any], ...] = ()
    licenses: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()

    @property
    def weights(self) -> FolderBlob:
        return next(b for b in self.blobs if b.media_type == WEIGHTS)


def _split(name: str) -> tuple[str | None, str, str, str]:
    """Ollama's name parts: host (None when not given), namespace, model, tag."""
    parts = name.split("/")
    last = parts[-1]
    model, _, tag = last.partition(":")
    host = parts[0] if len(parts) == 3 else None
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NS
    return host, namespace, model, tag or "latest"


def models_root(folder: Path) -> Path:
    """The folder holding manifests/ and blobs/: the given one, or its `models` (a copied .ollama)."""
    for root in (folder, folder / "models"):
        if (root / "manifests").is_dir():
            return root.resolve()
    if not folder.exists():
        raise PermanentError(f"the models folder {folder} does not exist (is the disk mounted?)")
    raise PermanentError(f"{folder} is not an Ollama models folder: it has no manifests/ "
                         "(copy the whole models folder: manifests/ and blobs/)")


def inside(root: Path, path: Path) -> Path:
    """`path` resolved, if it stays inside the models folder `root` (resolved); else PermanentError."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise PermanentError(f"{path} points outside the models folder {root}; not read "
                             "(copy the folder with its files, not links to elsewhere)")
    return real


def find_manifest(root: Path, name: str) -> Path:
    host, namespace, model, tag = _split(name)
    want = (namespace.lower(), model.lower(), tag.lower())
    found: list[Path] = []
    held: list[str] = []
    for path in sorted((root / "manifests").glob("*/*/*/*")):
        if not path.is_file():
            continue
        h, ns, m, t = path.relative_to(root / "manifests").parts
        held.append(f"{h}/{ns}/{m}:{t}")
        if (ns.lower(), m.lower(), t.lower()) == want and (host is None or h.lower() == host.lower()):
            found.append(path)
    if len(found) > 1:     # pulled from several registries: the public one, unless the name says
        found = [p for p in found if p.parts[-4].lower() == DEFAULT_HOST] or found
    if len(found) == 1:
        return inside(root, found[0])
    if found:
        raise PermanentError(f"{root}: {name} is there from several registries "
                             f"({', '.join(p.parts[-4] for p in found)}); name the host in the model's name")
    where = f"manifests/{host or '<host>'}/{namespace}/{model}/{tag}"
    holds = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "") if held else "nothing"
    raise PermanentError(f"{root}: no manifest for {name} (looked for {where}); the folder holds {holds}")


def blob_path(root: Path, digest: str) -> Path:
    if not _DIGEST.fullmatch(digest):
        raise PermanentError(f"the manifest names a layer {digest[:80]!r}, which is not a digest "
                             "(sha256: and 64 hex digits); not read")
    hexd = digest.removeprefix("sha256:")
    for form in (f"sha256-{hexd}", f"sha256:{hexd}"):
        path = root / "blobs" / form
        if path.is_file():
            return inside(root, path)
    raise PermanentError(f"{root / 'blobs' / ('sha256-' + hexd)} is missing: the manifest of this model "
                         "names it (copy the blobs/ folder again)")


def _read_small(path: Path, size: int, what: str) -> bytes:
    """The file's bytes, if it is `size` bytes on disk (checked before reading, and read no further)."""
    with path.open("rb") as f:
        on_disk = os.fstat(f.fileno()).st_size
        if on_disk != size:
            raise PermanentError(f"{path} is {on_disk} bytes, {what} says {size}: not read "
                                 "(copy it again); nothing was sent")
        return f.read(size + 1)


def _read_text(blob: FolderBlob) -> bytes:
    data = _read_small(blob.path, blob.size, "the manifest")
    if len(data) != blob.size or hashlib.sha256(data).hexdigest() != blob.digest:
        raise PermanentError(f"{blob.path} does not match its digest in the manifest: corrupt or truncated "
                             "(copy it again); nothing was sent")
    return data


def read_folder(folder: Path, name: str) -> FolderModel:
    """The model `name` in a models folder, its small layers read and checked."""
    root = models_root(folder)
    manifest = find_manifest(root, name)
    try:
        size = manifest.stat().st_size
        if size > _MANIFEST_LIMIT:
            raise ValueError(f"{size} bytes; a manifest is a few kB")
        doc = json.loads(_read_small(manifest, size, "its size"))
        layers = [(str(x["mediaType"]), str(x["digest"]), int(x["size"])) for x in doc["layers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{manifest} is not an Ollama manifest ({exc}); copy it again") from exc
    blobs: list[FolderBlob] = []
    texts: dict[str, list[bytes]] = {}
    for media_type, digest, size in layers:
        if size < 0:
            raise PermanentError(f"{manifest}: layer {digest[:80]} has a negative size")
        blob = FolderBlob(media_type, digest.removeprefix("sha256:"), size, blob_path(root, digest))
        if media_type in TEXTS and size <= _TEXT_LIMIT:
            texts.setdefault(media_type.removeprefix(MT), []).append(_read_text(blob))
        elif media_type in (WEIGHTS, PROJECTOR, ADAPTER):
            blobs.append(blob)
        else:
            raise PermanentError(f"{manifest}: layer {media_type} is not one ollafleet can carry over")
    if not any(b.media_type == WEIGHTS for b in blobs):
        raise PermanentError(f"{manifest} has no model weights layer")

    def one(kind: str) -> str | None:
        return texts[kind][-1].decode() if kind in texts else None

    try:
        params = json.loads(texts["params"][-1]) if "params" in texts else {}
        messages = json.loads(texts["messages"][-1]) if "messages" in texts else []
    except ValueError as exc:
        raise PermanentError(f"{manifest}: a params or messages layer is not JSON ({exc})") from exc
    return FolderModel(name, manifest, tuple(blobs), one("template"), one("system"), tuple(params.items()),
                       tuple(t.decode() for t in texts.get("license", [])), tuple(messages))


async def verify(model: FolderModel) -> None:
    """Every big blob has the manifest's size and sha256; else PermanentError naming the file."""

    for blob in model.blobs:
        size = os.path.getsize(blob.path)
        if size != blob.size:
            raise PermanentError(f"{blob.path} is {size} bytes, the manifest says {blob.size}: truncated "
                                 "(copy it again); nothing was sent")
    for blob in model.blobs:
        got = await file_sha256(blob.path)
        if got != blob.digest:
            raise PermanentError(f"{blob.path} does not match its digest (its sha256 is {got[:12]}…): corrupt "
                                 "(copy it again); nothing was sent")


def _file_names(model: FolderModel) -> tuple[dict[str, str], dict[str, str]]:
    """`files` and `adapters` of /api/create: names sort weights first, then projectors."""
    files: dict[str, str] = {}
    adapters: dict[str, str] = {}
    for i, blob in enumerate(model.blobs):
        if blob.media_type == ADAPTER:
            adapters[f"adapter-{i:02d}.gguf"] = f"sha256:{blob.digest}"
        else:
            part = "model" if blob.media_type == WEIGHTS else "projector"
            files[f"{i:02d}-{part}.gguf"] = f"sha256:{blob.digest}"
    return files, adapters


def expected(model: FolderModel, declared: WantedModel) -> WantedModel:
    """The declared model with the folder's values under the file's own overrides."""
    return replace(declared, parameters={**dict(model.parameters), **declared.parameters},
                   system=declared.system if declared.system is not None else model.system,
                   template=declared.template if declared.template is not None else model.template)


def create_body(model: FolderModel, declared: WantedModel) -> dict[str, Any]:
    """The /api/create body (without `model`) that rebuilds the folder's model on a node."""
    files, adapters = _file_names(model)
    body: dict[str, Any] = {"files": files, **expected(model, declared).create_body()}
    if adapters:
        body["adapters"] = adapters
    if model.licenses:
        body["license"] = list(model.licenses)
    if model.messages:
        body["messages"] = list(model.messages)
    return body


async def _chunks(path: Path, sent: list[int], on_chunk: Any) -> AsyncGenerator[bytes, None]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            sent[0] += len(chunk)
            on_chunk()
            yield chunk


async def upload_missing(api: OllamaClient, model: FolderModel, task: str, progress: Progress,
                         gate: asyncio.Semaphore) -> int:
    """Upload the blobs the node lacks, at most `gate` nodes at once; bytes sent. A failure
    leaves the node without that blob (Ollama keeps only a complete, verified upload)."""
    missing = [b for b in model.blobs if not await api.has_blob(f"sha256:{b.digest}")]
    if not missing:
        return 0
    total = sum(b.size for b in missing)
    sent = [0]
    async with gate:
        started = time.monotonic()

        def show() -> None:
            rate = sent[0] / max(time.monotonic() - started, 1e-6)
            progress.update(task, sent[0], total, f"uploading {rate / 1e6:.0f} MB/s")

        try:
            for blob in missing:
                async with contextlib.aclosing(_chunks(blob.path, sent, show)) as chunks:
                    await api.push_blob(f"sha256:{blob.digest}", chunks, blob.size)
        except TargetError:
            progress.done(task, "failed")
            raise
        seconds = time.monotonic() - started
        progress.done(task, f"uploaded {total / 1e6:.1f} MB in {seconds:.1f} s")
    return total
