"""/api/create from uploaded blobs (`files`, `adapters`), as Ollama 0.13.5 builds the model.

Every named blob must have been uploaded and be a GGUF file; its header decides the layer:
weights, projector (then the model can see images) or adapter. Files are read in name order.
Template, system, parameters, licenses and messages become their own layers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import catalogue as cat
from .catalogue import CatalogueModel
from .gguf import kind_of, read_kv
from .names import ModelName
from .node import SimNode
from .state import MT_ADAPTER, InstalledModel, build_layers
from .wire import HTTPError

BLOB_DIR = "/root/.ollama/models/blobs"
_MEDIA = {"model": cat.MT_MODEL, "projector": cat.MT_PROJECTOR, "adapter": MT_ADAPTER}


def check_license(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise HTTPError(400, "json: cannot unmarshal license: must be a string or an array of strings")


def check_create_messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise HTTPError(400, "json: cannot unmarshal object into Go struct field CreateRequest.messages "
                        "of type []api.Message")
    return [dict(m) for m in value]


async def layers_from_blobs(node: SimNode, files: dict[str, str], progress: Any) -> list[tuple[cat.Layer, str]]:
    """(layer, architecture) per named blob, in file-name order."""
    out: list[tuple[cat.Layer, str]] = []
    for fname in sorted(files):
        await progress.emit({"status": "parsing GGUF"})
        digest = "sha256:" + files[fname][7:].lower()
        blob = node.state.blobs.get(digest)
        if blob is None:
            raise HTTPError(500, f"open {BLOB_DIR}/sha256-{digest[7:]}: no such file or directory")
        if blob.head[:4] != b"GGUF":
            raise HTTPError(400, "supplied file was not in GGUF format")
        arch = read_kv(blob.head).get("general.architecture", "llama")
        out.append((cat.Layer(_MEDIA[kind_of(blob.head)], digest, blob.size), arch))
    return out


async def model_from_blobs(node: SimNode, n: ModelName, body: dict[str, Any], guess: Any,
                           progress: Any) -> InstalledModel:
    """The model `body` (files, adapters, template, ...) describes; raises HTTPError like Ollama."""
    found = await layers_from_blobs(node, body["files"], progress)
    found += await layers_from_blobs(node, body.get("adapters") or {}, progress)
    layers = [layer for layer, _ in found]
    weights = [(layer, arch) for layer, arch in found if layer.media_type == cat.MT_MODEL]
    if not weights:
        raise HTTPError(400, "no model weights: every file given is a projector or an adapter")
    first, arch = weights[0]
    info: CatalogueModel = guess(n, sum(layer.size for layer, _ in weights))
    caps = info.capabilities + (("vision",) if any(x.media_type == cat.MT_PROJECTOR for x in layers) else ())
    info = replace(info, family=arch, capabilities=caps)
    params = body.get("parameters")
    model = InstalledModel(name=n, info=info, layers=layers, config=info.config(), params=dict(params or {}),
                           template=body.get("template") or "", system=body.get("system") or "",
                           license=check_license(body.get("license")),
                           messages=check_create_messages(body.get("messages")),
                           parent_model=f"{BLOB_DIR}/sha256-{first.digest[7:]}")
    return replace(model, layers=build_layers(model))
