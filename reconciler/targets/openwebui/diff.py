"""Open WebUI, pure: the file projected onto it (`wanted_for`), what it holds (`Seen`), and the
field-level changes between them (`diff_openwebui`). No I/O here; apply uses the same helpers
(`patch_group`, `model_fields`, `model_body`, `grants_for`) so plan and apply agree.

Fields the file leaves out (None) are not managed: Open WebUI keeps what its admin set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from balancer.classify import listed_name, normalize_model
from reconciler.config.checks import OPENWEBUI_EXTRA_PARAMS
from reconciler.config.params import PARAMS
from reconciler.config.schema import DesiredState
from reconciler.plan.changes import WARNING, Action, Change, render_path
from reconciler.targets.openwebui.settings import SETTING, SETTINGS, Setting
from reconciler.targets.same import same

# Public is this access grant; Private is its absence (openwebui-api.md §6.1)
PUBLIC_GRANT = {"principal_type": "user", "principal_id": "*", "permission": "read"}

# what the model editor sends when a model is first saved (§6.2); the file overrides keys
DEFAULT_CAPABILITIES = {"file_context": True, "vision": True, "file_upload": True, "web_search": True,
                        "image_generation": True, "code_interpreter": True, "terminal": True,
                        "citations": True, "status_updates": True, "memory": True, "builtin_tools": True}

# Ollama's name in the file → the key Open WebUI stores (it sends max_tokens as num_predict)
PARAM_KEYS = {"num_predict": "max_tokens"}
FILE_KEYS = {stored: name for name, stored in PARAM_KEYS.items()}


def managed_param(stored_key: str) -> str | None:
    """The file's name of a stored param ollafleet manages (Ollama's options), else None:
    Open WebUI-only params (function_calling, ...) are left as the administrator set them."""
    name = FILE_KEYS.get(stored_key, stored_key)
    return name if name in PARAMS or name in OPENWEBUI_EXTRA_PARAMS else None


@dataclass(frozen=True)
class WantedModel:
    id: str                           # as the Ollama connection lists it ("codestral-30k:latest")
    public: bool
    name: str | None = None
    description: str | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)   # Ollama names, as in the file
    system: str | None = None
    declared: str = ""                # as the file names it ("codestral-30k"); "" = the id

    @property
    def other_id(self) -> str | None:
        """The file's name when it is not the listed id: an entry under it reaches no model."""
        return self.declared if self.declared and self.declared != self.id else None

    def stored_params(self) -> dict[str, Any]:
        """The params as Open WebUI stores them (max_tokens; system among them)."""
        out = {PARAM_KEYS.get(k, k): v for k, v in self.params.items()}
        if self.system is not None:
            out["system"] = self.system
        return out


@dataclass(frozen=True)
class Wanted:
    url: str
    settings: dict[str, Any]                  # Setting.path → value; declared ones only
    models: tuple[WantedModel, ...] = ()
    auth: Literal["api_key", "password"] = "password"
    warnings: tuple[str, ...] = ()
    read_all: bool = False                    # read every settings group (the importer), not only the declared

    def groups(self) -> list[str]:
        # "task" always: its prompt templates tell the balancer Open WebUI's task requests
        return sorted({s.group for s in SETTINGS} if self.read_all
                      else {SETTING[p].group for p in self.settings} | {"task"})


@dataclass(frozen=True)
class Seen:
    """What Open WebUI holds. `fresh`: no account yet (onboarding), so nothing else was read."""

    version: str = ""
    fresh: bool = False
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any] | None] = field(default_factory=dict)   # id → entry or None
    listed: frozenset[str] | None = None      # ids the connections list; None: unknown
    strays: dict[str, dict[str, Any]] = field(default_factory=dict)   # entries under a declared model's other id


@dataclass(frozen=True)
class Work:
    """What apply does for a change: create the admin, converge a settings group or a model."""

    kind: Literal["admin", "group", "model", "stray"]   # stray: delete the entry `group` names
    group: str = ""
    model: WantedModel | None = None


ADMIN_KEY = "openwebui:" + render_path(("admin",))


def wanted_for(state: DesiredState) -> Wanted | None:
    ow = state.openwebui
    if ow is None:
        return None
    auth: Literal["api_key", "password"] = "api_key" if ow.api_key is not None else "password"
    declared: dict[str, Any] = {s.path: s.declared(state) for s in SETTINGS}
    warnings: list[str] = []
    if auth == "api_key" and ow.enable_api_keys is False:
        assert ow.api_key is not None
        declared["enable_api_keys"] = None
        warnings.append(f"enable_api_keys = false would lock out the API key ollafleet signs in with "
                        f"({ow.api_key}); left as it is")
    # one identity: Open WebUI keys an entry by the id its Ollama connection lists, which always has a tag
    models = tuple(
        WantedModel(listed_name(name), m.openwebui.visibility == "public", m.openwebui.name, m.openwebui.description,
                    dict(m.openwebui.capabilities), dict(m.openwebui.params), m.openwebui.system, name)
        for name, m in state.models.items() if m.openwebui is not None)
    settings = {s.path: declared[s.path] for s in SETTINGS if declared.get(s.path) is not None}
    return Wanted(ow.url, settings, models, auth, tuple(warnings))


def patch_group(group: str, current: dict[str, Any], wanted: Wanted) -> dict[str, Any]:
    """`current` with the file's fields of `group` set; every other field as it was."""
    out = dict(current)
    for path, value in wanted.settings.items():
        if SETTING[path].group == group:
            out[SETTING[path].key] = value
    if group == "ollama" and "OLLAMA_API_CONFIGS" in current:
        out["OLLAMA_API_CONFIGS"] = _configs_by_url(current, out.get("OLLAMA_BASE_URLS") or [])
    return out


def _configs_by_url(current: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    """Per-connection options are keyed by the URL's index: keep each with its URL when the list changes."""
    old_urls = [str(u).rstrip("/") for u in current.get("OLLAMA_BASE_URLS") or []]
    old = current.get("OLLAMA_API_CONFIGS") or {}
    out: dict[str, Any] = {}
    for index, url in enumerate(urls):
        if url.rstrip("/") in old_urls and str(old_urls.index(url.rstrip("/"))) in old:
            out[str(index)] = old[str(old_urls.index(url.rstrip("/")))]
    return out


def is_public(grants: list[dict[str, Any]] | None) -> bool:
    return any(all(g.get(k) == v for k, v in PUBLIC_GRANT.items()) for g in grants or [])


def grants_for(model: WantedModel, grants: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The entry's grants with the public one added or removed; group and user shares kept."""
    kept = [{k: g.get(k) for k in ("principal_type", "principal_id", "permission")}
            for g in grants or [] if not is_public([g])]
    return kept + ([dict(PUBLIC_GRANT)] if model.public else [])


def model_fields(model: WantedModel, entry: dict[str, Any]) -> list[tuple[tuple[str, ...], Any, Any]]:
    """(path under the model, before, after) of every declared field that differs from `entry`."""
    out: list[tuple[tuple[str, ...], Any, Any]] = []
    meta = entry.get("meta") or {}
    params = entry.get("params") or {}
    if model.name is not None and not same(entry.get("name"), model.name):
        out.append((("name",), entry.get("name"), model.name))
    if model.description is not None and not same(meta.get("description"), model.description):
        out.append((("description",), meta.get("description"), model.description))
    caps = meta.get("capabilities") or {}
    for key, value in model.capabilities.items():
        if not same(caps.get(key), value):
            out.append((("capabilities", key), caps.get(key), value))
    for key, value in model.params.items():
        have = params.get(PARAM_KEYS.get(key, key))
        if not same(have, value):
            out.append((("params", key), have, value))
    for stored_key, have in params.items():   # the file's params are the whole set: drop the others
        dropped = managed_param(stored_key)
        if dropped is not None and dropped not in model.params:
            out.append((("params", dropped), have, None))
    if model.system is not None and not same(params.get("system"), model.system):
        out.append((("system",), params.get("system"), model.system))
    public = is_public(entry.get("access_grants"))
    if public != model.public:
        show = {True: "public", False: "private"}
        out.append((("visibility",), show[public], show[model.public]))
    return out


def model_body(model: WantedModel, entry: dict[str, Any] | None) -> dict[str, Any]:
    """The create (entry None) or update body: the entry with the declared fields set."""
    if entry is None:
        caps = {**DEFAULT_CAPABILITIES, **model.capabilities}
        return {"id": model.id, "base_model_id": None, "name": model.name or model.id,
                "meta": {"capabilities": caps, "description": model.description},
                "params": model.stored_params(), "is_active": True,
                "access_grants": grants_for(model, [])}
    meta = dict(entry.get("meta") or {})
    if model.capabilities:
        meta["capabilities"] = {**(meta.get("capabilities") or DEFAULT_CAPABILITIES), **model.capabilities}
    if model.description is not None:
        meta["description"] = model.description
    kept = {k: v for k, v in (entry.get("params") or {}).items() if managed_param(k) is None}
    params = {**kept, **model.stored_params()}
    return {"id": model.id, "base_model_id": entry.get("base_model_id"),
            "name": model.name if model.name is not None else entry.get("name") or model.id,
            "meta": meta, "params": params, "is_active": entry.get("is_active", True)}


def summary(model: WantedModel) -> dict[str, Any]:
    """What a created entry holds, as the plan shows it (file names)."""
    out: dict[str, Any] = {"visibility": "public" if model.public else "private"}
    for key in ("name", "description", "system"):
        if getattr(model, key) is not None:
            out[key] = getattr(model, key)
    if model.capabilities:
        out["capabilities"] = model.capabilities
    if model.params:
        out["params"] = model.params
    return out


# ---------------------------------------------------------------- the diff

PERSISTENCE_NOTE = ("settings are written through the API: they survive a restart only if Open WebUI runs "
                    "with ENABLE_PERSISTENT_CONFIG=true (its default), which it does not report; "
                    "after a restart without it the next pass writes them again")


def connection_notes(wanted: Wanted, seen: Seen) -> list[str]:
    """Per-connection options that would defeat the file: a model id prefix, an external type."""
    configs = (seen.groups.get("ollama") or {}).get("OLLAMA_API_CONFIGS") or {}
    out = []
    for index, config in sorted(configs.items()):
        if not isinstance(config, dict):
            continue
        if config.get("prefix_id"):
            out.append(f'Ollama connection {index} adds the prefix "{config["prefix_id"]}" to model ids, '
                       "so the model entries of the file do not apply to its models")
        if config.get("connection_type") == "external" and "task_model" in wanted.settings:
            out.append(f"Ollama connection {index} is marked external: Open WebUI uses the external task "
                       "model for its models, not task_model")
    return out


def diff_openwebui(target: str, wanted: Wanted, seen: Seen) -> tuple[list[Change[Work]], list[str]]:
    changes: list[Change[Work]] = []
    notes = list(wanted.warnings)
    needs: tuple[str, ...] = ()
    if seen.fresh:
        changes.append(Change(target, Action.CREATE, ("admin",), data=Work("admin"),
                              note="fresh Open WebUI: its first account, the admin, from the file's credentials"))
        notes.append("a fresh Open WebUI shows its settings only to an admin: every declared setting is "
                     "listed, and apply writes only those that differ once the admin exists")
        needs = (ADMIN_KEY,)
    notes += connection_notes(wanted, seen)
    for path, value in wanted.settings.items():
        setting = SETTING[path]
        if seen.fresh:
            before = None
        else:
            group = seen.groups.get(setting.group, {})
            before = group.get(setting.key)
            if same(before, value):
                continue
        changes.append(Change(target, Action.UPDATE, ("settings", *path.split(".")), before, value,
                              requires=needs, data=Work("group", group=setting.group)))
    if any(c.path[0] == "settings" for c in changes):
        notes.append(PERSISTENCE_NOTE)
    for model in wanted.models:
        entry = None if seen.fresh else seen.models.get(model.id)
        if entry is None:
            changes.append(Change(target, Action.CREATE, ("models", model.id), after=summary(model),
                                  requires=needs, data=Work("model", model=model)))
        else:
            for sub, before, after in model_fields(model, entry):
                action = Action.DELETE if sub[0] == "params" and after is None else Action.UPDATE
                changes.append(Change(target, action, ("models", model.id, *sub), before, after,
                                      data=Work("model", model=model)))
        stray = seen.strays.get(model.other_id or "")
        if model.other_id and stray is not None:
            changes.append(Change(target, Action.DELETE, ("models", model.other_id), requires=needs,
                                  note=f"an entry under an id no Ollama connection lists; the model is "
                                  f'listed as "{model.id}", whose entry holds the file\'s settings',
                                  data=Work("stray", group=model.other_id)))
        if seen.listed is not None and model.id not in seen.listed:
            near = [i for i in seen.listed if normalize_model(i) == normalize_model(model.id)]
            also = f' (it lists "{near[0]}": rename the model in the file to that)' if near else ""
            notes.append(f'{WARNING}models."{model.id}": no Ollama connection of Open WebUI lists this model, '
                         f"so nobody can chat with it{also}; its entry is kept ready and applies as soon as a "
                         "node serves it")
    task = wanted.settings.get("task_model")
    if task and seen.listed is not None and task not in seen.listed:
        notes.append(f'task model "{task}" is not listed by the Ollama connection: until it is, '
                     "Open WebUI uses each chat's own model for titles and tags")
    return changes, notes
