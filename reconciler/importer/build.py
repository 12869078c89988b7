"""Pure: what `ollafleet import` read → the sections of desired_state.toml, and what it cannot say.

Models on every node that was read are declared once; the others name their `nodes`. A model
whose /api/show names another installed model as its parent is declared `from` it, with only
the parameters, system and template that differ from that base. A model pinned in memory on
every node that holds it is `keep_loaded`. Open WebUI's settings and model entries are mapped
back through the Open WebUI target's own tables (settings.file_fragment, PARAM_KEYS, DEFAULT_CAPABILITIES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from balancer.classify import listed_name
from reconciler.config.checks import OPENWEBUI_EXTRA_PARAMS, valid_model_name
from reconciler.config.params import INT_PARAMS, PARAMS, check_param
from reconciler.config.runtime import v1_name
from reconciler.importer.folder import Folders, match, overrides
from reconciler.importer.read import NodeRead, OpenWebUIRead
from reconciler.targets.same import same
from reconciler.targets.ollama.facts import ShowInfo, model_key
from reconciler.targets.ollama.diff import PINNED_AFTER
from reconciler.targets.openwebui.diff import DEFAULT_CAPABILITIES, PARAM_KEYS, is_public
from reconciler.targets.openwebui.settings import file_fragment, live

FILE_PARAM = {stored: name for name, stored in PARAM_KEYS.items()}   # max_tokens → num_predict
# meta keys of an entry that the file does not manage, and their values when nobody set them
META_DEFAULTS: dict[str, Any] = {"profile_image_url": "/static/favicon.png", "tags": [], "knowledge": None,
                                 "toolIds": [], "filterIds": [], "actionIds": [], "suggestion_prompts": None}
META_MANAGED = ("capabilities", "description")


@dataclass
class Section:
    """One model of the file: its table, its Open WebUI entry and comments above it."""

    name: str
    body: dict[str, Any]
    openwebui: dict[str, Any] | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class Document:
    nodes: list[dict[str, Any]]
    node_comments: dict[str, list[str]]
    models: list[Section]
    balancer: dict[str, Any]
    openwebui: dict[str, Any] | None
    openwebui_comments: list[str]
    warnings: list[str]          # what the file cannot express (also printed on stderr)
    missing: list[str]           # servers that could not be read


@dataclass(frozen=True)
class Definition:
    """How one node holds a model: plain, or derived from a base with overrides."""

    base: str | None = None
    parameters: tuple[tuple[str, Any], ...] = ()
    system: str | None = None
    template: str | None = None
    note: str = ""
    ollama_dir: str | None = None       # made from this copied models folder (import --ollama-dir)


def _param_value(key: str, value: Any) -> Any:
    if key in INT_PARAMS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _from_folder(read: NodeRead, name: str, show: ShowInfo, folders: Folders, warn: list[str]) -> Definition:
    """A model built from uploaded files: from a given models folder if one holds it, else a note."""
    entry, others = match(folders, name, show)
    if entry is not None:
        params, system, template, dropped = overrides(show, entry.model)
        for key in dropped:
            warn.append(f"{name} on {read.name}: drops the folder's parameter {key}, which the file cannot say")
        return Definition(None, tuple((k, _param_value(k, v)) for k, v in sorted(params.items())), system,
                          template, ollama_dir=entry.folder)
    if others:
        return Definition(note=f"{name} on {read.name} has the weights of {others[0].name} in {others[0].folder}, "
                          "but ollama_dir finds a model by its own name: declared as a model to pull; copy it "
                          f"under the name {name} or rename it on the nodes")
    return Definition(note=f'{name} on {read.name} was built from "{show.parent_model}", which is not an '
                      "installed model (a GGUF file or a copied models folder?): declared as a model to pull; "
                      'to rebuild it, set gguf = "<file>" or ollama_dir = "<folder>" by hand '
                      "(or import again with --ollama-dir FOLDER)")


def _definition(read: NodeRead, name: str, canonical: dict[str, str], warn: list[str],
                folders: Folders | None = None) -> Definition:
    show = read.shows.get(name)
    if show is None or not show.parent_model:
        return Definition()
    assert read.view is not None
    parent = read.view.present(show.parent_model)
    base_show = read.shows.get(parent.name) if parent is not None else None
    if parent is None or base_show is None or model_key(parent.name) == model_key(name):
        return _from_folder(read, name, show, folders or {}, warn)
    params: dict[str, Any] = {}
    for key, value in sorted(show.parameters.items()):
        if key in base_show.parameters and same(value, base_show.parameters[key]):
            continue
        value = _param_value(key, value)
        if key not in PARAMS or check_param(key, value):
            warn.append(f"{name} on {read.name}: parameter {key} = {value!r} is not one the file can hold; left out")
            continue
        params[key] = value
    for key in sorted(set(base_show.parameters) - set(show.parameters)):
        warn.append(f"{name} on {read.name}: drops its base's parameter {key}, which the file cannot say")
    return Definition(canonical[model_key(parent.name)], tuple(params.items()),
                      show.system if show.system != base_show.system else None,
                      show.template if show.template != base_show.template else None)


def _pinned(read: NodeRead, name: str) -> bool:
    assert read.view is not None
    for entry in read.view.loaded:
        if model_key(entry.name) == model_key(name):
            return entry.expires_at is None or entry.expires_at - read.view.now > PINNED_AFTER
    return False


def _model_sections(reads: list[NodeRead], warn: list[str], folders: Folders | None = None) -> list[Section]:
    ok = [r for r in reads if r.view is not None]
    canonical: dict[str, str] = {}             # model_key → the name the file uses
    holders: dict[str, list[NodeRead]] = {}
    for read in ok:
        assert read.view is not None
        for m in sorted(read.view.models, key=lambda m: m.name):
            key = model_key(m.name)
            canonical.setdefault(key, m.name)
            holders.setdefault(key, []).append(read)
    sections: list[Section] = []
    for key, name in sorted(canonical.items(), key=lambda kv: kv[1]):
        if not valid_model_name(name):
            warn.append(f'"{name}" is not a model name the file accepts; left out')
            continue
        on = holders[key]
        defs = {r.name: _definition(r, r.view.present(name).name, canonical, warn, folders)  # type: ignore[union-attr]
                for r in on}
        seen = [defs[r.name] for r in on]       # the most common way, ties to the first node
        chosen = max(seen, key=lambda d: (seen.count(d), -seen.index(d)))
        differ = sorted(r.name for r in on if defs[r.name] != chosen)
        follows = next(r.name for r in on if defs[r.name] == chosen)
        lacking = sorted(r.name for r in on if chosen.base is not None
                         and r.view is not None and r.view.present(chosen.base) is None)
        if lacking:     # the file cannot put a derived model on a node without its base
            chosen = Definition(note=f"{name} is derived from {chosen.base}, which {', '.join(lacking)} lacks: "
                                "declared as a model to pull; declare `from` by hand once the base is there")
        if chosen.base is not None and model_key(v1_name(chosen.base)) == key:
            warn.append(f"{name} is the model ollafleet builds for /v1 requests to {chosen.base}; left out "
                        '(with apply_model_params = "fill" ollafleet keeps it built)')
            continue
        body: dict[str, Any] = {}
        comments: list[str] = []
        if chosen.note:
            comments.append(chosen.note)
            warn.append(chosen.note)
        if differ:
            text = (f"{name} is built differently on {', '.join(differ)} than on {follows}; the file follows "
                    f"{follows}, so a plan may show re-creating it on {', '.join(differ)}")
            comments.append(text)
            warn.append(text)
        if chosen.base is not None or chosen.ollama_dir is not None:
            if chosen.base is not None:
                body["from"] = chosen.base
            else:
                body["ollama_dir"] = chosen.ollama_dir
            if chosen.parameters:
                body["parameters"] = dict(chosen.parameters)
            if chosen.system is not None:
                body["system"] = chosen.system
            if chosen.template is not None:
                body["template"] = chosen.template
        pinned = [r.name for r in on if _pinned(r, name)]
        if pinned and len(pinned) == len(on):
            body["keep_loaded"] = True
        elif pinned:
            text = (f"{name} is kept loaded on {', '.join(pinned)} only; keep_loaded applies to every node "
                    "holding it, so it is left off")
            comments.append(text)
            warn.append(text)
        if len(on) < len(ok):
            body["nodes"] = [r.name for r in on]
        sections.append(Section(name, body, comments=comments))
    return sections


def _entry_fields(model_id: str, entry: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    meta = entry.get("meta") or {}
    params = entry.get("params") or {}
    if entry.get("name") and entry["name"] != model_id:
        out["name"] = str(entry["name"])
    if meta.get("description"):
        out["description"] = str(meta["description"])
    grants = entry.get("access_grants") or []
    out["visibility"] = "public" if is_public(grants) else "private"
    caps = {k: v for k, v in sorted((meta.get("capabilities") or {}).items())
            if isinstance(v, bool) and DEFAULT_CAPABILITIES.get(k) is not v}
    if caps:
        out["capabilities"] = caps
    file_params: dict[str, Any] = {}
    for key, value in sorted(params.items(), key=lambda kv: FILE_PARAM.get(kv[0], kv[0])):
        if value is None or key == "system":
            continue
        name = FILE_PARAM.get(key, key)
        if key in PARAM_KEYS:          # stored under the Ollama name, which the file maps elsewhere
            warn.append(f'models."{model_id}".openwebui: param {key} = {value!r} is stored under a name the '
                        "file cannot say; left as it is")
            continue
        value = _param_value(name, value)
        if name in PARAMS and check_param(name, value) is None:
            file_params[name] = value
        elif name in OPENWEBUI_EXTRA_PARAMS and isinstance(value, (str, int, bool)):
            file_params[name] = value
        else:
            warn.append(f'models."{model_id}".openwebui: param {key} = {value!r} is not one the file can hold; '
                        "left as it is")
    if file_params:
        out["params"] = file_params
    if isinstance(params.get("system"), str) and params["system"]:
        out["system"] = params["system"]
    others = [g for g in grants if not is_public([g])]
    if others:
        warn.append(f'models."{model_id}": shared with {len(others)} group(s) or user(s); the file cannot say '
                    "so, and apply keeps those shares")
    set_meta = sorted(k for k, v in meta.items()
                      if k not in META_MANAGED and v not in (None, "", [], {}) and META_DEFAULTS.get(k) != v)
    if set_meta:
        warn.append(f'models."{model_id}": Open WebUI settings the file cannot hold are left as they are: '
                    + ", ".join(f"meta.{k}" for k in set_meta))
    if entry.get("is_active") is False:
        warn.append(f'models."{model_id}" is turned off in Open WebUI; the file cannot say so')
    return out


def _settings(ow: OpenWebUIRead, known_models: set[str], node_urls: dict[str, str],
              warn: list[str]) -> tuple[dict[str, Any], str | None, list[str]]:
    """Settings for [openwebui], the balancer's public URL, and comments."""
    assert ow.seen is not None
    groups = ow.seen.groups

    def get(path: str) -> Any:
        return live(groups, path)

    out = file_fragment(groups)       # every setting the file can hold, as Open WebUI holds it
    comments: list[str] = []
    task = out.get("task_model")
    known = {model_key(m): m for m in known_models}
    if task is not None and model_key(task) not in known:
        del out["task_model"]
        warn.append(f'Open WebUI\'s task model "{task}" is on no node that was read; task_model left out')
    elif task is not None:
        out["task_model"] = known[model_key(task)]
    execution = out.get("code_execution") or {}
    if "code_execution" in out and set(execution) != {"enabled", "engine"}:
        del out["code_execution"]     # the file holds both or neither
    engine = get("code_execution.engine")
    if engine is not None and "engine" not in execution:
        warn.append(f'Open WebUI runs code with the engine "{engine}", which the file cannot say; code_execution left out')
    if get("ollama_api") is False:
        warn.append("Open WebUI's Ollama API is turned off; the file always turns it on (plan will show it)")
    urls = out.pop("ollama_urls", None) or []
    public_url = None
    if len(urls) == 1:
        public_url = urls[0]
        direct = [n for n, u in node_urls.items() if u.rstrip("/") == public_url]
        if direct:
            comments.append(f"Open WebUI talks to node {direct[0]} directly, not through a balancer: once the "
                            "ollafleet daemon runs, set balancer.public_url to the daemon's address")
    else:
        out["ollama_urls"] = urls
    return out, public_url, comments


def _ordered(sections: list[Section]) -> list[Section]:
    """Models on every node first, then the others; by name, a derived model right after its base."""
    out: list[Section] = []
    for partial in (False, True):
        group = {s.name: s for s in sorted(sections, key=lambda s: s.name) if ("nodes" in s.body) == partial}

        def visit(s: Section, depth: int = 0) -> None:
            base = group.get(s.body.get("from", ""))
            if base is not None and base not in out and depth < len(group):
                visit(base, depth + 1)
            if s not in out:
                out.append(s)

        for section in group.values():
            visit(section)
    return out


def build(reads: list[NodeRead], ow: OpenWebUIRead | None, credentials: dict[str, str],
          folders: Folders | None = None, running: dict[str, Any] | None = None) -> Document:
    """`running`: the [balancer] of the daemon that serves this network (its /status), if read."""
    warn: list[str] = []
    missing = [f"node {r.name} ({r.url}): {r.error}" for r in reads if r.view is None]
    sections = _model_sections(reads, warn, folders)
    nodes: list[dict[str, Any]] = []
    node_comments: dict[str, list[str]] = {}
    for r in reads:
        node: dict[str, Any] = {"name": r.name, "url": r.url}
        if r.view is None:
            node["models"] = []
            node_comments[r.name] = [f"could not be read ({r.error}): no model is declared for it; "
                                     "list its models here, or remove `models` to give it every model"]
        nodes.append(node)
    balancer: dict[str, Any] = {"listen": "0.0.0.0:11434"}
    ow_table: dict[str, Any] | None = None
    ow_comments: list[str] = []
    if ow is not None:
        ow_table = {"url": ow.url, **credentials}
        for note in ow.notes:
            if "verified against" not in note:
                warn.append(f"Open WebUI: {note}")
        if ow.error is not None:
            missing.append(f"Open WebUI ({ow.url}): {ow.error}")
            ow_comments.append("its settings could not be read: none is managed until you add them")
        elif ow.seen is not None:
            # one identity: "m" and "m:latest" are one model, written once under the name the nodes list
            by_key = {model_key(s.name): s for s in sections}
            listed = {s.name for s in sections}
            # an entry under an id no connection lists ("m" for "m:latest") is read first, so the
            # entry under the listed id, the one people get, wins
            for model_id, entry in sorted(ow.entries.items(), key=lambda kv: (kv[0] in listed, kv[0])):
                section = by_key.get(model_key(model_id))
                if section is None:
                    if not valid_model_name(model_id):
                        warn.append(f'Open WebUI has an entry for "{model_id}", not a model name the file accepts; left out')
                        continue
                    section = Section(listed_name(model_id), {"nodes": []}, comments=[
                        "Open WebUI has an entry for this model, but no node that was read holds it"])
                    sections.append(section)
                    by_key[model_key(model_id)] = section
                elif model_id != section.name:
                    warn.append(f'Open WebUI has an entry under "{model_id}", an id no Ollama connection lists '
                                f'(the nodes list "{section.name}"): nobody can use it; apply deletes it')
                    if section.openwebui is not None:
                        continue
                section.openwebui = _entry_fields(section.name, entry, warn)
            by_name = {s.name: s for s in sections}
            for preset, base in sorted(ow.presets.items()):
                warn.append(f'Open WebUI workspace model "{preset}" (built on "{base}") is not something the '
                            "file can hold; left as it is")
            settings, public_url, ow_comments = _settings(ow, set(by_name), {r.name: r.url for r in reads}, warn)
            ow_table.update(settings)
            if public_url is not None:
                balancer["public_url"] = public_url
    if running is not None:      # the daemon's balancer as it runs
        balancer = {**running, **({"public_url": balancer["public_url"]} if "public_url" in balancer
                                  and "public_url" not in running else {})}
    else:   # a hand-built network's balancer relays requests as they are: so does the imported one
        balancer.update({"silence_timeout": "120s", "queue_timeout": "0s", "apply_model_params": "off"})
    sections = _ordered(sections)
    return Document(nodes, node_comments, sections, balancer, ow_table, ow_comments,
                    list(dict.fromkeys(warn)), missing)
