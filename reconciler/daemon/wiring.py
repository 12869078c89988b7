"""What the daemon feeds the balancer: its settings and node list from the file, a drain
around every change that rebuilds or removes a model on a node, and a poll after every change
to a node's models, so the balancer routes to a new model as soon as the pass reports it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from balancer import Balancer, NodeSpec, Settings
from balancer.classify import normalize_model
from balancer.params import ModelParams
from balancer.tasks import KINDS, TaskIdent
from reconciler.config import DesiredState
from reconciler.config.runtime import runtime_params
from reconciler.plan.changes import Change
from reconciler.targets.base import AnyTarget, Observed, Progress, Seen, Target, Work, Wrapper


def balancer_settings(state: DesiredState, task_config: Mapping[str, Any] | None = None) -> Settings:
    """`task_config`: Open WebUI's /api/v1/tasks/config as the last pass read it (its task
    prompt templates), to tell its task requests from people's."""
    b = state.balancer
    return Settings(silence_timeout=b.silence_timeout, connect_timeout=b.connect_timeout,
                    queue_timeout=b.queue_timeout, poll_interval=b.poll_interval,
                    refuse_management=b.refuse_management, idle_timeout=b.idle_timeout,
                    max_connections=b.max_connections, max_body=b.max_body_mb * 2**20,
                    apply_model_params=b.apply_model_params, model_params=model_params(state),
                    tasks=task_ident(state, task_config or {}), task_timeout=b.task_timeout)


def task_ident(state: DesiredState, task_config: Mapping[str, Any]) -> TaskIdent | None:
    """What identifies Open WebUI's task requests: the task model (the file's, else the one Open
    WebUI holds; none: the chat's own model) and each kind's template in force ("" = built in).
    None without an Open WebUI in the file: requests are all people's."""
    if state.openwebui is None:
        return None
    model = state.openwebui.task_model or task_config.get("TASK_MODEL") or None
    templates = {kind: str(task_config.get(key) or "") for kind, (_, key, _) in KINDS.items()}
    return TaskIdent(normalize_model(model) if isinstance(model, str) else None, templates)


def model_params(state: DesiredState) -> dict[str, ModelParams]:
    """The file's runtime parameters as the balancer reads them, by normalised model name. A -v1
    model gets its base's: it shares the base's runner, so a client naming it must not unpin it."""
    out: dict[str, ModelParams] = {}
    for name, r in runtime_params(state).items():
        out[normalize_model(name)] = ModelParams(r.options, r.keep_loaded, r.enforce, r.keep_alive, r.v1_model)
        if r.v1_model is not None:
            out[normalize_model(r.v1_model)] = ModelParams(r.options, r.keep_loaded, r.enforce, r.keep_alive)
    return out


def balancer_nodes(state: DesiredState) -> list[NodeSpec]:
    # models=None: the balancer routes by what each node reports, which is the truth even
    # while the reconciler is still pulling.
    # pinned: the `keep_loaded` models that belong on the node; the balancer's warmer keeps
    # them loaded there whenever the node is idle (balancer/warm.py)
    return [NodeSpec(name=n.name, url=n.url, max_concurrent=n.max_concurrent,
                     capability=n.capability, speed=n.speed,
                     pinned=tuple(normalize_model(m) for m in state.models_on(n)
                                  if state.models[m].keep_loaded))
            for n in state.nodes]


class Draining(Wrapper[Seen, Work]):
    """Wraps a target: while one of its changes disrupts a model on a node (the target says
    which, e.g. an Ollama node re-creating or deleting it), the balancer sends no request for
    that model there. One node at a time rebuilds a given model, so the others keep serving it."""

    def __init__(self, inner: Target[Seen, Work], balancer: Balancer, model_locks: dict[str, asyncio.Lock],
                 on_task_config: Callable[[dict[str, Any]], None] = lambda c: None) -> None:
        super().__init__(inner)
        self.balancer = balancer
        self.model_locks = model_locks
        self.on_task_config = on_task_config

    async def observe(self) -> Observed[Seen]:
        observed = await self.inner.observe()
        groups = getattr(observed.data, "groups", None)   # an Open WebUI target's settings
        if isinstance(groups, dict) and isinstance(groups.get("task"), dict):
            self.on_task_config(groups["task"])
        return observed

    async def apply(self, change: Change[Work], progress: Progress) -> None:
        hit = self.inner.disrupts(change)
        if hit is None:
            await self.inner.apply(change, progress)
        else:
            async with self.model_locks.setdefault(hit.model, asyncio.Lock()):
                self.balancer.set_draining(hit.node, hit.model, True)
                try:
                    await self.inner.apply(change, progress)
                finally:
                    self.balancer.set_draining(hit.node, hit.model, False)
        if hit is not None or changes_models(change):
            await self.balancer.refresh()     # the balancer knows the new model set before the pass says ok


def changes_models(change: Change[object]) -> bool:
    """A change that pulls, creates or deletes a model on an Ollama node (not Open WebUI's entries)."""
    return change.target.startswith("ollama/") and change.path[:1] == ("models",)


def draining(balancer: Balancer, on_task_config: Callable[[dict[str, Any]], None] = lambda c: None
             ) -> Callable[[Sequence[AnyTarget]], Sequence[AnyTarget]]:
    """`on_task_config` gets Open WebUI's task settings each time a pass reads them."""
    def wrap(targets: Sequence[AnyTarget]) -> list[AnyTarget]:
        locks: dict[str, asyncio.Lock] = {}    # per pass, shared by every node
        return [Draining(t, balancer, locks, on_task_config) for t in targets]
    return wrap
