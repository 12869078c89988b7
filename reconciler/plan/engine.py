"""Observe every target at once, diff into a plan, apply the plan in dependency order.

A failure stays with its target: the other targets still converge, and the report names it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.errors import PermanentError, TargetError, TemporaryError
from reconciler.plan.changes import Change, ChangeResult, PassReport, Plan, Status, TargetProblem
from reconciler.targets.base import AnyTarget, Observed, Progress


class NoProgress:
    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        pass

    def done(self, task: str, status: str = "") -> None:
        pass


PREEMPTED = "not started: a newer file is in force, the next pass plans from it"
ABANDONED = "abandoned for a newer file: the next pass plans from it (a pull resumes where it stopped)"


@dataclass(frozen=True)
class Limits:
    per_target: int = 1      # changes applied at once on one target (one pull per node by default)
    overall: int = 16        # changes applied at once on the whole network


async def observe_all(targets: Sequence[AnyTarget]) -> list[Observed[object]]:
    async def one(target: AnyTarget) -> Observed[object]:
        try:
            return await target.observe()
        except TargetError as exc:
            return Observed(target.name, error=str(exc))
        except Exception as exc:  # a bug in one target must not hide the others
            return Observed(target.name, error=f"{type(exc).__name__}: {exc}")

    return list(await asyncio.gather(*(one(t) for t in targets)))


def plan_from(targets: Sequence[AnyTarget], observed: Sequence[Observed[object]]) -> Plan:
    changes: list[Change[object]] = []
    problems: list[TargetProblem] = []
    notes: list[TargetProblem] = []
    for target, seen in zip(targets, observed):
        notes += [TargetProblem(target.name, n) for n in seen.notes]
        problems += [TargetProblem(target.name, p) for p in seen.problems]
        if seen.error is not None:
            problems.append(TargetProblem(target.name, seen.error))
            continue
        try:
            found, said = target.diff(seen)
        except Exception as exc:
            problems.append(TargetProblem(target.name, f"could not plan: {type(exc).__name__}: {exc}"))
            continue
        changes += found
        notes += [TargetProblem(target.name, n) for n in said]
    return Plan(tuple(changes), tuple(problems), tuple(notes))


async def plan(targets: Sequence[AnyTarget]) -> Plan:
    return plan_from(targets, await observe_all(targets))


async def apply(
    the_plan: Plan,
    targets: Sequence[AnyTarget],
    *,
    limits: Limits = Limits(),
    progress: Progress | None = None,
    on_result: Callable[[ChangeResult], None] | None = None,
    stop: asyncio.Event | None = None,
    abandon: Callable[[Change[object]], bool] = lambda change: False,
    hold: Callable[[Change[object]], str | None] = lambda change: None,
) -> PassReport:
    """Apply exactly the changes of `the_plan`. Never raises for a failed change; on
    cancellation (Ctrl-C) the changes not finished are reported as cancelled, then it re-raises.
    Once `stop` is set no further change starts (reported cancelled with the message PREEMPTED),
    the changes under way for which `abandon(change)` is true are cancelled (ABANDONED), and
    the others run to their end. A change for which `hold(change)` gives a reason is not tried
    (HELD, with that reason): it failed before and its retry is not due."""
    by_name = {t.name: t for t in targets}
    progress = progress or NoProgress()
    started = time.time()
    results: dict[str, ChangeResult] = {}
    finished = {c.key: asyncio.Event() for c in the_plan.changes}
    per_target = {name: asyncio.Semaphore(limits.per_target) for name in by_name}
    overall = asyncio.Semaphore(limits.overall)

    def record(result: ChangeResult) -> None:
        results[result.change.key] = result
        finished[result.change.key].set()
        if on_result:
            on_result(result)

    async def run(change: Change[object]) -> None:
        for key in change.requires:
            if key in finished:
                await finished[key].wait()
        failed = [k for k in change.requires if k in results and results[k].status is not Status.APPLIED]
        if failed:
            record(ChangeResult(change, Status.SKIPPED_DEPENDENCY, f"needs {failed[0]}, which did not succeed"))
            return
        target = by_name.get(change.target)
        if target is None:
            record(ChangeResult(change, Status.FAILED, "no such target"))
            return
        reason = hold(change)
        if reason is not None:
            record(ChangeResult(change, Status.HELD, reason))
            return
        async with overall, per_target[change.target]:
            if stop is not None and stop.is_set():
                record(ChangeResult(change, Status.CANCELLED, PREEMPTED))
                return
            t0 = time.monotonic()
            running[change.key] = change
            try:
                await target.apply(change, progress)
            except asyncio.CancelledError:
                if change.key in abandoned:      # for a newer file: this pass goes on to its end
                    record(ChangeResult(change, Status.CANCELLED, ABANDONED, time.monotonic() - t0))
                    return
                record(ChangeResult(change, Status.CANCELLED, "interrupted", time.monotonic() - t0))
                raise
            except TargetError as exc:
                record(ChangeResult(change, Status.FAILED, str(exc), time.monotonic() - t0,
                                    permanent=isinstance(exc, PermanentError),
                                    retry_after=exc.retry_after if isinstance(exc, TemporaryError) else 0.0))
            except Exception as exc:
                record(ChangeResult(change, Status.FAILED, f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
            else:
                record(ChangeResult(change, Status.APPLIED, "", time.monotonic() - t0))
            finally:
                running.pop(change.key, None)

    async def preempt() -> None:
        assert stop is not None
        await stop.wait()
        for key, change in list(running.items()):
            if abandon(change):
                abandoned.add(key)
                by_key[key].cancel()

    running: dict[str, Change[object]] = {}
    abandoned: set[str] = set()
    by_key = {c.key: asyncio.ensure_future(run(c)) for c in the_plan.changes}
    tasks = list(by_key.values())
    watcher = asyncio.ensure_future(preempt()) if stop is not None else None
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    return PassReport(the_plan, tuple(results[c.key] for c in the_plan.changes), started, time.time())
