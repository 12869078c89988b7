"""Write an Ollama models folder (`manifests/` + `blobs/`) as `ollama pull` leaves it, for tests.

    folder = write_model(tmp / "models", "qwq:32b", template="…", params={"temperature": 0.6})
    folder = from_catalogue(tmp / "models", "qwq:32b")          # the catalogue's text layers
    folder.manifest_path                # models/manifests/registry.ollama.ai/library/qwq/32b
    folder.blob_path(folder.weights)    # models/blobs/sha256-<hex>
    corrupt(folder), truncate(folder)   # a damaged weights blob (same size / cut short)

Layout (Ollama's own): `manifests/<host>/<namespace>/<model>/<tag>` holds the manifest JSON;
each layer and the config are `blobs/sha256-<hex>` (the form every Ollama writes today, and
the only one Windows allows). Ollama before 0.1.30 wrote `blobs/sha256:<hex>` on Linux and
macOS: `colon_names=True` writes that older form.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import catalogue as cat
from .catalogue import CATALOGUE, Catalogue
from .gguf import header
from .gofmt import go_json
from .names import parse_name

from .state import MT_ADAPTER


@dataclass(frozen=True)
class FolderLayer:
    media_type: str
    digest: str          # "sha256:<hex>"
    size: int


@dataclass
class ModelsFolder:
    root: Path
    name: str
    manifest_path: Path
    layers: list[FolderLayer]
    config: FolderLayer
    colon_names: bool = False
    texts: dict[str, Any] = field(default_factory=dict)   # what the text layers say

    def blob_path(self, layer: FolderLayer) -> Path:
        sep = ":" if self.colon_names else "-"
        return self.root / "blobs" / layer.digest.replace(":", sep, 1)

    def of_type(self, media_type: str) -> list[FolderLayer]:
        return [layer for layer in self.layers if layer.media_type == media_type]

    @property
    def weights(self) -> FolderLayer:
        return self.of_type(cat.MT_MODEL)[0]


def gguf_bytes(architecture: str, kind: str, size: int, seed: str) -> bytes:
    """A GGUF header, then deterministic filler up to `size` bytes (different per seed)."""
    head = header(architecture, kind)
    filler = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return (head + filler)[:max(size, len(head))]


def _put(root: Path, data: bytes, media_type: str, colon_names: bool) -> FolderLayer:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / digest.replace(":", ":" if colon_names else "-", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FolderLayer(media_type, digest, len(data))


def write_model(root: Path, name: str, *, architecture: str = "llama", weights_size: int = 64 << 10,
                projector_size: int = 0, adapter_sizes: tuple[int, ...] = (), template: str = "",
                system: str = "", params: dict[str, Any] | None = None, licenses: tuple[str, ...] = (),
                messages: list[dict[str, str]] | None = None, colon_names: bool = False) -> ModelsFolder:
    """Write one model into the folder `root` (created if needed); other models already there stay."""
    n = parse_name(name)
    if n is None:
        raise ValueError(f"invalid model name {name!r}")
    layers = [_put(root, gguf_bytes(architecture, "model", weights_size, f"weights:{name}"), cat.MT_MODEL,
                   colon_names)]
    if projector_size:
        layers.append(_put(root, gguf_bytes("clip", "projector", projector_size, f"projector:{name}"),
                           cat.MT_PROJECTOR, colon_names))
    for i, size in enumerate(adapter_sizes):
        layers.append(_put(root, gguf_bytes(architecture, "adapter", size, f"adapter{i}:{name}"), MT_ADAPTER,
                           colon_names))
    texts: dict[str, Any] = {"template": template, "system": system, "params": dict(params or {}),
                             "licenses": list(licenses), "messages": list(messages or [])}
    if template:
        layers.append(_put(root, template.encode(), cat.MT_TEMPLATE, colon_names))
    if system:
        layers.append(_put(root, system.encode(), cat.MT_SYSTEM, colon_names))
    for text in licenses:
        layers.append(_put(root, text.encode(), cat.MT_LICENSE, colon_names))
    if params:
        layers.append(_put(root, go_json(params), cat.MT_PARAMS, colon_names))
    if messages:
        layers.append(_put(root, go_json(messages), cat.MT_MESSAGES, colon_names))
    cfg = {"model_format": "gguf", "model_family": architecture, "model_families": [architecture],
           "model_type": "", "file_type": "Q4_K_M", "architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]}}
    config = _put(root, go_json(cfg), cat.MT_CONFIG, colon_names)
    manifest = {"schemaVersion": 2, "mediaType": cat.MT_MANIFEST,
                "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
                "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size} for x in layers]}
    path = root / "manifests" / n.host / n.namespace / n.model / n.tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(manifest).encode())
    return ModelsFolder(root, name, path, layers, config, colon_names, texts)


def from_catalogue(root: Path, name: str, *, catalogue: Catalogue = CATALOGUE, weights_size: int = 64 << 10,
                   colon_names: bool = False, **kw: Any) -> ModelsFolder:
    """A catalogue model's text layers (template, system, params, license) over small weights."""
    n = parse_name(name)
    info = cat.lookup(catalogue, n) if n is not None else None
    if info is None:
        raise ValueError(f"{name!r} is not in the catalogue")
    args: dict[str, Any] = {"architecture": info.family, "template": info.template, "system": info.system,
                            "params": dict(info.params), "licenses": (info.license,) if info.license else (),
                            "projector_size": 4096 if info.projector_size else 0}
    return write_model(root, name, weights_size=weights_size, colon_names=colon_names, **{**args, **kw})


def corrupt(folder: ModelsFolder, layer: FolderLayer | None = None) -> Path:
    """Flip one byte in the middle of a blob (weights by default): same size, wrong digest."""
    path = folder.blob_path(layer or folder.weights)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def truncate(folder: ModelsFolder, layer: FolderLayer | None = None) -> Path:
    """Cut a blob (weights by default) to half its size, as an interrupted copy leaves it."""
    path = folder.blob_path(layer or folder.weights)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path
