"""Pure: what one Ollama node should hold (Wanted) + what it holds (NodeView) → changes and notes.

No I/O here, so every rule is tested as a table: desired + observed → expected changes.
Paths: models."m" (create = pull/create, delete = prune), models."m".digest (re-pull),
models."m".parameters.<key> / .system / .template / .from (re-create).

Which models are loaded is not the reconciler's to change: people's requests load and evict
them, and the daemon's balancer re-pins `keep_loaded` models on idle nodes. The plan only warns
when a node's pinned models cannot all fit in its GPU memory (`pin_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from reconciler.config.runtime import runtime_params, v1_name
from reconciler.plan.changes import WARNING
from reconciler.config.schema import DesiredState, Node
from reconciler.plan.changes import Action, Change
from reconciler.targets.same import same
from reconciler.targets.ollama.facts import PsEntry, ShowInfo, TagEntry, model_key

PINNED_AFTER = timedelta(days=365)   # a runner expiring later than this is kept "forever"
GiB = 1 << 30
ASSUMED_GPU_MEMORY = 24 * GiB        # a node that does not say (nodes.gpu_memory_gb): one 24 GB GPU


@dataclass(frozen=True)
class WantedModel:
    name: str                         # as declared ("codestral-30k")
    source: str = "pull"              # pull | gguf | from | ollama_dir
    pull: str = ""                    # what to pull (registry name or mirror host/ns/m:t)
    insecure: bool = False
    gguf: Path | None = None
    base: str | None = None           # declared name of the `from` model
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    digest: str | None = None         # pinned manifest digest, 64 hex
    keep_loaded: bool = False
    ollama_dir: Path | None = None    # a copied Ollama models folder (see ollama_dir.py)
    load_options: dict[str, Any] = field(default_factory=dict)   # the runner's load-time options (num_ctx, ...)

    def __post_init__(self) -> None:
        if not self.pull:
            object.__setattr__(self, "pull", self.name)

    @property
    def key(self) -> str:
        return model_key(self.name)

    def create_body(self) -> dict[str, Any]:
        """The overrides of /api/create (without model, from and files)."""
        body: dict[str, Any] = {}
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        if self.system is not None:
            body["system"] = self.system
        if self.template is not None:
            body["template"] = self.template
        return body


@dataclass(frozen=True)
class Wanted:
    node: str
    models: tuple[WantedModel, ...]
    prune: bool = False
    max_concurrent: int = 1
    gpu_memory: int | None = None     # bytes, as the file says; None: not said


@dataclass(frozen=True)
class NodeView:
    """A node as observed: version, installed models, runners, and /api/show of the ones that matter."""

    version: str
    models: tuple[TagEntry, ...] = ()
    loaded: tuple[PsEntry, ...] = ()
    shows: dict[str, ShowInfo | None] = field(default_factory=dict)   # by model_key
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    files: dict[str, str] = field(default_factory=dict)   # model_key → sha256 of its local GGUF file

    def present(self, name: str) -> TagEntry | None:
        key = model_key(name)
        return next((m for m in self.models if model_key(m.name) == key), None)


@dataclass(frozen=True)
class Work:
    """The private payload of a change: what apply must do."""

    kind: str                         # pull | create | delete
    model: WantedModel | None = None
    name: str = ""                    # for delete: the installed name


def wanted_for(state: DesiredState, node: Node, base_dir: Path | None = None) -> Wanted:
    """Project the file onto one node: its models, each followed by the model that serves
    its /v1 requests when it needs one (reconciler/config/runtime.py)."""
    runtime = runtime_params(state)
    out = []
    for name in state.models_on(node):
        m = state.models[name]
        gguf = None
        if m.gguf is not None:
            gguf = Path(m.gguf)
            if not gguf.is_absolute() and base_dir is not None:
                gguf = base_dir / gguf
        out.append(WantedModel(name, m.source, m.pull or name, m.insecure, gguf, m.from_, dict(m.parameters),
                               m.system, m.template, (m.digest or "").removeprefix("sha256:") or None,
                               m.keep_loaded, _local(m.ollama_dir, base_dir),
                               runtime[name].load_options if name in runtime else {}))
        v1 = runtime[name].v1_model if name in runtime else None
        if v1 is not None:
            out.append(WantedModel(v1, "from", base=name, parameters=dict(runtime[name].v1_parameters)))
    memory = int(node.gpu_memory_gb * 1e9) if node.gpu_memory_gb is not None else None
    return Wanted(node.name, tuple(out), state.reconcile.prune_models, node.max_concurrent, memory)


def _local(path: str | None, base_dir: Path | None) -> Path | None:
    if path is None:
        return None
    out = Path(path).expanduser()
    return base_dir / out if not out.is_absolute() and base_dir is not None else out


def needs_show(wanted: Wanted, view: NodeView) -> list[str]:
    """Installed names whose /api/show the diff compares (built models and their bases)."""
    names: list[str] = []
    by_key = {w.key: w for w in wanted.models}
    for w in wanted.models:
        present = view.present(w.name)
        if present is None:
            continue
        if w.source in ("from", "gguf", "ollama_dir"):
            names.append(present.name)
        if w.source == "from" and w.base and model_key(w.base) in by_key:
            base = view.present(w.base)
            if base is not None:
                names.append(base.name)
    return list(dict.fromkeys(names))


def _expected(w: WantedModel, base: ShowInfo | None) -> tuple[dict[str, Any], str | None, str | None]:
    """Parameters, system and template the built model should show. A derived model inherits
    what it does not override from its base; for a GGUF model only what the file sets counts."""
    if w.source == "from" and base is not None:
        params = {**base.parameters, **w.parameters}
        system = w.system if w.system is not None else base.system
        template = w.template if w.template is not None else base.template
        return params, system, template
    return dict(w.parameters), w.system, w.template


def rewrites_gguf(version: str) -> bool:
    """Ollama ≥ 0.30 converts an imported GGUF, so its weights no longer carry the file's digest."""
    try:
        return tuple(int(p) for p in version.split("-")[0].split(".")[:2]) >= (0, 30)
    except ValueError:
        return False


def drift(w: WantedModel, seen: ShowInfo, base: ShowInfo | None,
          file_digest: str = "") -> list[tuple[tuple[str, ...], Any, Any]]:
    """(path under the model, observed, wanted) for each value that differs."""
    out: list[tuple[tuple[str, ...], Any, Any]] = []
    if w.source in ("gguf", "ollama_dir") and file_digest and seen.weights and seen.weights != file_digest:
        out.append(((w.source,), f"sha256:{seen.weights}", f"sha256:{file_digest}"))
    if w.source == "from" and w.base and seen.parent_model and model_key(seen.parent_model) != model_key(w.base):
        out.append((("from",), seen.parent_model, w.base))
    params, system, template = _expected(w, base)
    keys = list(params)
    if w.source == "from" and base is not None:   # overrides the file no longer sets
        keys += [k for k in seen.parameters if k not in params]
    for k in keys:
        have, want = seen.parameters.get(k), params.get(k)
        if have is None and want is None:
            continue
        if have is None or want is None or not same(have, want):
            out.append((("parameters", k), have, want))
    if system is not None and seen.system != system:
        out.append((("system",), seen.system, system))
    if template is not None and seen.template != template:
        out.append((("template",), seen.template, template))
    return out


def bases_first(models: tuple[WantedModel, ...]) -> list[WantedModel]:
    """File order, except that a base comes before the models derived from it."""
    by_key = {w.key: w for w in models}
    out: list[WantedModel] = []
    seen: set[str] = set()

    def visit(w: WantedModel, depth: int = 0) -> None:
        if w.key in seen or depth > len(models):
            return
        if w.source == "from" and w.base and model_key(w.base) in by_key:
            visit(by_key[model_key(w.base)], depth + 1)
        seen.add(w.key)
        out.append(w)

    for w in models:
        visit(w)
    return out


def pin_fit(wanted: Wanted, view: NodeView) -> str | None:
    """A warning when the node's keep_loaded models cannot all be resident at once. Sizes: a
    model's weights as /api/tags reports them, or its runner's VRAM when it is loaded (weights +
    KV cache), so a lower bound before it is first loaded. GPU memory: the file's gpu_memory_gb,
    else 24 GB, raised to what the node's runners hold right now (Ollama reports no total)."""
    keys = {w.key for w in wanted.models if w.keep_loaded}
    sizes: dict[str, int] = {}
    for w in wanted.models:
        present = view.present(w.name)
        shares_base = w.source == "from" and w.base is not None and model_key(w.base) in keys
        if not w.keep_loaded or present is None or shares_base:
            continue
        runner = max((e.size_vram for e in view.loaded if model_key(e.name) == w.key), default=0)
        sizes[w.name] = max(present.size, runner)
    need = sum(sizes.values())
    in_use = sum(e.size_vram for e in view.loaded)
    memory = wanted.gpu_memory if wanted.gpu_memory is not None else max(ASSUMED_GPU_MEMORY, in_use)
    if need <= memory:
        return None
    said = "" if wanted.gpu_memory is not None else " (assumed: set gpu_memory_gb on the node to say)"
    each = ", ".join(f"{name} {size / 1e9:.1f} GB" for name, size in sizes.items())
    return (f"{WARNING}keep_loaded models cannot all stay resident on {wanted.node}: {each} need at least "
            f"{need / 1e9:.1f} GB, its GPU memory is {memory / 1e9:.1f} GB{said}; the balancer keeps what fits "
            "and loading one evicts another, so set `models` on the nodes to share them out")


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def diff_node(target: str, wanted: Wanted, view: NodeView) -> tuple[list[Change[Work]], list[str]]:
    """Every change that brings the node to `wanted`, in dependency order, and the notes."""
    changes: list[Change[Work]] = []
    notes: list[str] = []
    keys_of: dict[str, list[str]] = {}     # model key → keys of the changes that (re)build it
    missing: list[str] = []
    drifted: list[str] = []
    present_names: list[str] = []

    def add(change: Change[Work], model: str | None = None) -> Change[Work]:
        changes.append(change)
        if model is not None:
            keys_of.setdefault(model_key(model), []).append(change.key)
        return change

    for w in bases_first(wanted.models):
        requires: tuple[str, ...] = tuple(keys_of.get(model_key(w.base), ())) if w.source == "from" and w.base else ()
        present = view.present(w.name)
        if present is None:
            missing.append(w.name)
            if w.source == "pull":
                note = "" if model_key(w.pull) == w.key else f"pull {w.pull}" + (" (insecure: plain http)" if w.insecure else "")
                add(Change(target, Action.CREATE, ("models", w.name), after=w.pull, note=note,
                           data=Work("pull", w)), w.name)
            elif w.source == "from":
                add(Change(target, Action.CREATE, ("models", w.name), after={"from": w.base, **w.create_body()},
                           requires=requires, note=f"create from {w.base}", data=Work("create", w)), w.name)
            elif w.source == "ollama_dir":
                add(Change(target, Action.CREATE, ("models", w.name), after={"ollama_dir": str(w.ollama_dir),
                                                                           **w.create_body()},
                           note="upload the blobs the node lacks, then create", data=Work("create", w)), w.name)
            else:
                add(Change(target, Action.CREATE, ("models", w.name), after={"gguf": str(w.gguf), **w.create_body()},
                           note="upload the GGUF file if the node lacks it, then create", data=Work("create", w)),
                    w.name)
        else:
            present_names.append(present.name)
            if w.source == "pull":
                if w.digest and present.digest != w.digest:
                    drifted.append(w.name)
                    add(Change(target, Action.REPLACE, ("models", w.name, "digest"), before=present.digest,
                               after=w.digest, note=f"pull {w.pull} again", data=Work("pull", w)), w.name)
            else:
                seen = view.shows.get(w.key)
                base = view.shows.get(model_key(w.base)) if w.base else None
                file_digest = "" if rewrites_gguf(view.version) else view.files.get(w.key, "")
                if seen is not None:
                    found = drift(w, seen, base, file_digest)
                    if found:
                        drifted.append(w.name)
                    for sub, have, want in found:
                        add(Change(target, Action.REPLACE if sub in (("from",), ("gguf",), ("ollama_dir",))
                                   else Action.UPDATE,
                                   ("models", w.name, *sub), before=have, after=want, requires=requires,
                                   note="re-create the model", data=Work("create", w)), w.name)
                if w.digest:
                    notes.append(f"{w.name}: a pinned digest is checked only for pulled models")
                if w.source in ("gguf", "ollama_dir") and rewrites_gguf(view.version):
                    notes.append(f"{w.name}: Ollama {view.version} converts imported GGUF files, "
                                 "so a replaced file is not detected")

    wanted_keys = {w.key for w in wanted.models}
    # a -v1 helper of a declared model is ollafleet's own, not someone else's model
    helpers = {model_key(v1_name(w.name)) for w in wanted.models}
    unlisted = [m.name for m in view.models if model_key(m.name) not in wanted_keys
                and (wanted.prune or model_key(m.name) not in helpers)]
    if unlisted and wanted.prune:   # first: deleting frees disk space for the pulls
        changes[:0] = [Change(target, Action.DELETE, ("models", name), before=name, data=Work("delete", name=name))
                       for name in unlisted]
    elif unlisted:
        notes.append(f"not in the file, kept because prune_models is off: {_short(unlisted)}")

    notes.insert(0, _summary(wanted, view, present_names, missing, drifted))
    if (fit := pin_fit(wanted, view)) is not None:
        notes.append(fit)
    return changes, notes


def _summary(wanted: Wanted, view: NodeView, present: list[str], missing: list[str], drifted: list[str]) -> str:
    parts = [f"Ollama {view.version or '?'}", f"{len(present)} of {len(wanted.models)} models present"]
    if missing:
        parts.append(f"missing: {_short(missing)}")
    if drifted:
        parts.append(f"drifted: {_short(drifted)}")
    loaded = [f"{e.name}" + (" (pinned)" if e.expires_at and e.expires_at - view.now > PINNED_AFTER else "")
              for e in view.loaded]
    parts.append(f"loaded: {_short(loaded)}" if loaded else "nothing loaded")
    return "; ".join(parts)


def settings_note(wanted: Wanted) -> str:
    return (f"not changeable through the API, set in the node's environment: default keep-alive "
            f"(OLLAMA_KEEP_ALIVE), parallel slots (OLLAMA_NUM_PARALLEL, the file says {wanted.max_concurrent}), "
            f"KV cache type (OLLAMA_KV_CACHE_TYPE)")
