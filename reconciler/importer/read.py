"""Read a live network for `ollafleet import`, with the targets' own observers and clients.

Each node is observed by a throwaway OllamaNode (the code `plan` uses), then every installed
model is read back with its client's /api/show. Open WebUI is observed by a throwaway
OpenWebUITarget told to read every settings group of its table and an entry per model id, so
they are read exactly as `plan` reads them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.config.values import Secret
from reconciler.errors import TargetError
from reconciler.scrub import remember
from reconciler.targets.ollama import OllamaNode
from reconciler.targets.ollama.facts import ShowInfo
from reconciler.targets.ollama.diff import NodeView, Wanted
from reconciler.targets.openwebui import Credentials, OpenWebUITarget
from reconciler.targets.openwebui.diff import Seen, WantedModel, connection_notes
from reconciler.targets.openwebui.diff import Wanted as OpenWebUIWanted


@dataclass
class NodeRead:
    name: str
    url: str
    view: NodeView | None = None
    shows: dict[str, ShowInfo] = field(default_factory=dict)   # installed name → /api/show
    error: str | None = None


@dataclass
class OpenWebUIRead:
    url: str
    seen: Seen | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)   # id → model entry (overrides)
    presets: dict[str, str] = field(default_factory=dict)               # workspace model id → its base
    notes: list[str] = field(default_factory=list)
    error: str | None = None


async def read_node(name: str, url: str, *, timeout: float = 10.0) -> NodeRead:
    node = OllamaNode(Wanted(name, ()), url, timeout=timeout)
    try:
        observed = await node.observe()
        if observed.error is not None:
            return NodeRead(name, url, error=observed.error)
        view = observed.data
        assert isinstance(view, NodeView)
        names = [m.name for m in view.models]
        try:
            shows = await asyncio.gather(*(node.api.show(n) for n in names))
        except TargetError as exc:
            return NodeRead(name, url, error=str(exc))
        return NodeRead(name, url, view, {n: s for n, s in zip(names, shows) if s is not None})
    finally:
        await node.close()


def _secret(ref: str | None, env: Mapping[str, str]) -> Secret | None:
    """A "${VARIABLE}" reference of the file resolved in `env` (the scrubber learns the value)."""
    if not ref:
        return None
    var = ref.removeprefix("${").removesuffix("}")
    value = env.get(var, "")
    remember(value)
    return Secret(var, value)


def _reader(url: str, credentials: Mapping[str, str], env: Mapping[str, str],
            model_ids: list[str]) -> OpenWebUITarget:
    """An Open WebUI target that changes nothing and reads every settings group and an entry per id."""
    creds = Credentials(_secret(credentials.get("api_key"), env), _secret(credentials.get("admin_email"), env),
                        _secret(credentials.get("admin_password"), env))
    wanted = OpenWebUIWanted(url.rstrip("/"), {}, tuple(WantedModel(m, public=False) for m in model_ids),
                             "api_key" if creds.api_key is not None else "password", read_all=True)
    return OpenWebUITarget(wanted, creds)


async def read_openwebui(url: str, credentials: Mapping[str, str], env: Mapping[str, str],
                         model_ids: list[str]) -> OpenWebUIRead:
    """`credentials` holds the file's references ({"api_key": "${OPENWEBUI_API_KEY}"}), resolved in `env`."""
    target = _reader(url, credentials, env, model_ids)
    out = OpenWebUIRead(url)
    try:
        observed = await target.observe()
        out.notes = list(observed.notes)
        if observed.error is not None:
            out.error = observed.error
            return out
        seen = observed.data
        assert seen is not None
        out.seen = seen
        if seen.fresh:
            out.error = "this Open WebUI has no admin account yet, so it holds no settings to import"
            return out
        out.notes += connection_notes(target.wanted, seen)
        out.entries = {i: e for i, e in seen.models.items() if e is not None}
        try:
            # every saved entry, not only those of the models the nodes hold
            rows = await target.api.all_models()
            more = [str(r["id"]) for r in rows if r.get("id")
                    and r.get("base_model_id") is None and r["id"] not in out.entries]
            for model_id, entry in zip(more, await asyncio.gather(*(target.api.model(i) for i in more))):
                if entry is not None:
                    out.entries[model_id] = entry
            out.presets = {str(r["id"]): str(r["base_model_id"]) for r in rows
                           if r.get("id") and r.get("base_model_id") is not None}
        except TargetError as exc:
            out.notes.append(f"could not list the saved model entries ({exc}); only those of the "
                             "models the nodes hold were read")
        return out
    finally:
        await target.close()
