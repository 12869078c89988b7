"""Simulated Ollama nodes on 127.0.0.1 and a desired state pointing at them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import DesiredState, load_text
from reconciler.plan import engine
from reconciler.plan.changes import PassReport, Plan
from reconciler.targets.ollama import OllamaNode, node_targets

FAST = {"timeout": 1.0, "stream_timeout": 2.0}


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from simulator import Simulator

    async with Simulator() as s:
        yield s


async def add_nodes(sim: Any, count: int, **kw: Any) -> list[Any]:
    from simulator import Timing

    return [await sim.add_node(name=f"gpu-{i + 1}", port=0, timing=Timing.instant(), **kw) for i in range(count)]


def desired(nodes: Sequence[Any], models: str, *, prune: bool = False, node_models: dict[str, list[str]] | None = None,
            extra: str = "") -> DesiredState:
    text = f"version = 1\n[reconcile]\nprune_models = {'true' if prune else 'false'}\n{extra}\n"
    for n in nodes:
        text += f'[[nodes]]\nname = "{n.name}"\nurl = "{n.url}"\n'
        if node_models and n.name in node_models:
            text += "models = [" + ", ".join(f'"{m}"' for m in node_models[n.name]) + "]\n"
    return load_text(text + models, env={})


def targets(state: DesiredState, base_dir: Path | None = None, **kw: Any) -> list[OllamaNode]:
    return node_targets(state, base_dir=base_dir, **{**FAST, **kw})


async def plan(state: DesiredState, **kw: Any) -> Plan:
    ts = targets(state, **kw)
    try:
        return await engine.plan(ts)
    finally:
        for t in ts:
            await t.close()


async def apply(state: DesiredState, progress: Any = None, **kw: Any) -> PassReport:
    ts = targets(state, **kw)
    try:
        the_plan = await engine.plan(ts)
        limits = engine.Limits(per_target=state.reconcile.max_pulls_per_node)
        return await engine.apply(the_plan, ts, limits=limits, progress=progress)
    finally:
        for t in ts:
            await t.close()


def failures(report: PassReport) -> list[str]:
    return [f"{r.change.key}: {r.message}" for r in report.failed] + \
        [f"{p.target}: {p.message}" for p in report.plan.problems]
