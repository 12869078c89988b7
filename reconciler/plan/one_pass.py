"""One reconcile pass, the same for `ollafleet apply` and the daemon: read every target, plan,
apply within the file's limits (or, when the file says `suspend`, only report), close the targets.

`reconcile.suspend = true` means the same everywhere: every change is planned and reported,
none is made, neither by `ollafleet apply` nor by the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence

from reconciler.config import DesiredState
from reconciler.plan import engine
from reconciler.plan.changes import Change, ChangeResult, PassReport, Plan, TargetProblem
from reconciler.targets.base import Progress, AnyTarget

SUSPENDED = ("reconcile.suspend = true: changes are only reported; neither `ollafleet apply` nor the "
             "daemon makes them (set it to false to apply)")


def suspend_notes(state: DesiredState) -> list[TargetProblem]:
    """What plan and apply output say when the file suspends changes."""
    return [TargetProblem("reconcile", SUSPENDED)] if state.reconcile.suspend else []


async def run_pass(state: DesiredState, targets: Sequence[AnyTarget], *,
                   notes: Callable[[], Awaitable[list[TargetProblem]]] | None = None,
                   on_plan: Callable[[Plan], None] = lambda plan: None,
                   progress: Progress | None = None,
                   on_result: Callable[[ChangeResult], None] | None = None,
                   stop: asyncio.Event | None = None,
                   abandon: Callable[[Change[object]], bool] = lambda change: False,
                   hold: Callable[[Change[object]], str | None] = lambda change: None) -> PassReport:
    """Plan `targets` (plus `notes()`, facts gathered beside the targets), hand the plan to
    `on_plan`, then apply it unless suspended; the targets are closed in every case. The other
    arguments go to engine.apply."""
    started = time.time()
    try:
        if notes is None:
            plan = await engine.plan(targets)
        else:
            plan, extra = await asyncio.gather(engine.plan(targets), notes())
            if extra:
                plan = dataclasses.replace(plan, notes=plan.notes + tuple(extra))
        on_plan(plan)
        if state.reconcile.suspend:
            return PassReport(plan, (), started, time.time())
        limits = engine.Limits(per_target=state.reconcile.max_pulls_per_node)
        return await engine.apply(plan, targets, limits=limits, progress=progress, on_result=on_result,
                                  stop=stop, abandon=abandon, hold=hold)
    finally:
        await asyncio.gather(*(t.close() for t in targets), return_exceptions=True)
