"""Per-node store: installed models (manifests, layers), blobs, loaded runners."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from . import catalogue as cat
from .catalogue import CatalogueModel, Layer
from .gofmt import FOREVER_NS, go_json, rfc3339nano
from .names import ModelName, parse_name

RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
DEFAULT_NUM_CTX = 4096


@dataclass
class InstalledModel:
    name: ModelName
    info: CatalogueModel  # family, sizes, capabilities (of the weights)
    layers: list[Layer]
    config: Layer
    params: dict[str, Any]
    template: str
    system: str
    license: list[str]
    messages: list[dict[str, Any]]
    parent_model: str = ""
    modified_ns: int = field(default_factory=time.time_ns)

    @property
    def manifest_bytes(self) -> bytes:
        return go_json({"schemaVersion": 2, "mediaType": cat.MT_MANIFEST,
                        "config": self.config.as_manifest(),
                        "layers": [layer.as_manifest() for layer in self.layers]})

    @property
    def digest(self) -> str:
        return cat.sha256_hex(self.manifest_bytes)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers) + self.config.size

    @property
    def weights(self) -> str:
        return next(layer.digest for layer in self.layers if layer.media_type == cat.MT_MODEL)

    @property
    def weights_size(self) -> int:
        return sum(layer.size for layer in self.layers
                   if layer.media_type in (cat.MT_MODEL, cat.MT_PROJECTOR))

    @property
    def capabilities(self) -> list[str]:
        return list(self.info.capabilities)

    def details(self, parent: str = "") -> dict[str, Any]:
        return {"parent_model": parent, "format": "gguf", "family": self.info.family,
                "families": [self.info.family], "parameter_size": self.info.parameter_size,
                "quantization_level": self.info.quantization}


def model_from_catalogue(info: CatalogueModel, name: ModelName) -> InstalledModel:
    params = dict(info.params)
    return InstalledModel(name=name, info=info, layers=info.layers(), config=info.config(),
                          params=params, template=info.template, system=info.system,
                          license=[info.license] if info.license else [], messages=[])


def derive_model(base: InstalledModel, name: ModelName, *, parameters: dict[str, Any] | None,
                 template: str | None, system: str | None, license: Any = None,
                 messages: list[dict[str, Any]] | None = None,
                 parent: str | None = None) -> InstalledModel:
    """`/api/create` with `from`: base params ∪ request params, request wins per key."""
    params = dict(base.params)
    params.update(parameters or {})
    lic = list(base.license)
    if license:
        lic += [license] if isinstance(license, str) else list(license)
    new = replace(base, name=name, params=params,
                  template=base.template if template is None else template,
                  system=base.system if system is None else system, license=lic,
                  messages=list(messages) if messages else list(base.messages),
                  parent_model=base.name.short if parent is None else parent,
                  modified_ns=time.time_ns())
    new.layers = build_layers(new)
    return new


def build_layers(m: InstalledModel) -> list[Layer]:
    """Weights (and projector) kept, small layers rebuilt from the model's text values."""
    out = [layer for layer in m.layers if layer.media_type in (cat.MT_MODEL, cat.MT_PROJECTOR)]
    if m.template:
        out.append(cat.text_layer(cat.MT_TEMPLATE, m.template.encode()))
    if m.system:
        out.append(cat.text_layer(cat.MT_SYSTEM, m.system.encode()))
    for text in m.license:
        out.append(cat.text_layer(cat.MT_LICENSE, text.encode()))
    if m.params:
        out.append(cat.text_layer(cat.MT_PARAMS, json.dumps(m.params, sort_keys=True).encode()))
    if m.messages:
        out.append(cat.text_layer(cat.MT_MESSAGES, json.dumps(m.messages).encode()))
    return out


@dataclass
class Blob:
    size: int
    head: bytes  # first bytes, enough to tell GGUF from anything else


@dataclass
class Slot:
    """One of a runner's OLLAMA_NUM_PARALLEL slots and the tokens its KV cache holds."""

    cache: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: float = 0.0


@dataclass
class Runner:
    """A loaded model, keyed by its weights blob.

    `busy` is Ollama's reference count: requests holding the runner or waiting for one of
    its slots (the semaphore `sem`, `num_parallel` wide, an unbounded queue)."""

    weights: str
    model: InstalledModel  # the model whose request caused the load
    options: tuple[Any, ...]
    num_ctx: int
    keep_alive_ns: int
    size: int
    size_vram: int
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    expires_ns: int | None = None  # None while it has never gone idle
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)
    num_parallel: int = 1
    sem: asyncio.Semaphore = field(init=False)
    slots: list[Slot] = field(init=False)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while busy == 0

    def __post_init__(self) -> None:
        self.sem = asyncio.Semaphore(self.num_parallel)
        self.slots = [Slot() for _ in range(self.num_parallel)]
        self.idle.set()

    def expires_at(self) -> int:
        if self.expires_ns is not None:
            return self.expires_ns
        return _deadline(time.time_ns(), self.keep_alive_ns)

    def went_idle(self) -> None:
        self.last_used = time.monotonic()
        self.expires_ns = _deadline(time.time_ns(), self.keep_alive_ns)


def _deadline(now_ns: int, keep_ns: int) -> int:
    return now_ns + keep_ns if keep_ns < FOREVER_NS else now_ns + FOREVER_NS


class NodeState:
    def __init__(self, catalogue: cat.Catalogue) -> None:
        self.catalogue = catalogue
        self.models: dict[str, InstalledModel] = {}
        self.blobs: dict[str, Blob] = {}
        self.runners: dict[str, Runner] = {}
        self.partials: dict[str, int] = {}  # digest → bytes of an interrupted download

    # -- installed models --------------------------------------------------------------
    def get(self, name: str) -> InstalledModel | None:
        n = parse_name(name)
        return self.models.get(n.key) if n else None

    def put(self, model: InstalledModel) -> None:
        model.modified_ns = time.time_ns()
        self.models[model.name.key] = model
        for layer in (*model.layers, model.config):
            self.blobs.setdefault(layer.digest, Blob(layer.size, (layer.content or b"GGUF")[:4]))

    def delete(self, name: str) -> bool:
        n = parse_name(name)
        gone = self.models.pop(n.key, None) if n else None
        if gone is None:
            return False
        used = {layer.digest for m in self.models.values() for layer in (*m.layers, m.config)}
        for layer in (*gone.layers, gone.config):
            if layer.digest not in used:
                self.blobs.pop(layer.digest, None)
        return True

    def copy(self, model: InstalledModel, dest: ModelName) -> None:
        self.put(replace(model, name=dest))

    def tags(self, capabilities: bool = False) -> list[dict[str, Any]]:
        """/api/tags entries, newest first (`capabilities` only in builds >= 0.30.0)."""
        ordered = sorted(self.models.values(), key=lambda m: m.modified_ns, reverse=True)
        out = []
        for m in ordered:
            entry = {"name": m.name.short, "model": m.name.short,
                     "modified_at": rfc3339nano(m.modified_ns, utc=False), "size": m.size,
                     "digest": m.digest, "details": m.details()}
            if capabilities:
                entry["capabilities"] = m.capabilities
            out.append(entry)
        return out

    # -- runners -----------------------------------------------------------------------
    def expire(self) -> None:
        now = time.time_ns()
        for key, r in list(self.runners.items()):
            if r.busy == 0 and r.expires_ns is not None and r.expires_ns <= now:
                del self.runners[key]

    def ps(self) -> list[dict[str, Any]]:
        self.expire()
        ordered = sorted(self.runners.values(), key=lambda r: r.expires_at(), reverse=True)
        return [{"name": r.model.name.short, "model": r.model.name.short, "size": r.size,
                 "digest": r.model.digest, "details": r.model.details(),
                 "expires_at": rfc3339nano(r.expires_at(), utc=False),
                 "size_vram": r.size_vram, "context_length": r.num_ctx} for r in ordered]


RUNNER_DEFAULTS: dict[str, Any] = {"num_batch": 512, "num_gpu": -1, "main_gpu": 0,
                                   "use_mmap": None, "num_thread": 0}


def runner_options(model: InstalledModel, options: dict[str, Any],
                   num_ctx: int) -> tuple[tuple[str, Any], ...]:
    """The load-time options a runner is compared on, defaults filled in (Ollama compares
    resolved options, so an explicit default does not reload)."""
    merged = {**model.params, **(options or {})}
    out: list[tuple[str, Any]] = [("num_ctx", num_ctx)]
    for key, default in RUNNER_DEFAULTS.items():
        value = merged.get(key)
        value = default if value is None else value
        out.append((key, int(value) if isinstance(value, float) else value))
    return tuple(out)


def effective_num_ctx(model: InstalledModel, options: dict[str, Any],
                      default: int = DEFAULT_NUM_CTX, clamp: bool = False) -> int:
    """The request's num_ctx (model params < options), else the node's default, at least 4
    (2048 for vision models); `clamp` caps it at the training context (Ollama >= 0.15.5)."""
    merged = {**model.params, **(options or {})}
    value = max(4, int(merged.get("num_ctx") or default))
    if clamp:
        value = min(value, model.info.context_length)
    return max(value, 2048) if "vision" in model.info.capabilities else value
