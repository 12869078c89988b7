"""The plan/apply engine with stand-in targets: ordering, failures, rendering, JSON, exit codes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from rich.console import Console

from reconciler.errors import PermanentError, TemporaryError
from reconciler.plan import engine, render
from reconciler.plan.changes import Action, Change, Status
from reconciler.targets.base import Observed, Progress


@dataclass
class FakeTarget:
    """Holds a dict; wants another dict. Records what it was asked to do."""

    name: str
    have: dict[str, Any]
    want: dict[str, Any]
    unreachable: bool = False
    fail_on: dict[str, Exception] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    log: list[str] | None = None
    delay: float = 0.0

    async def observe(self) -> Observed:
        if self.unreachable:
            return Observed(self.name, error="unreachable: connection refused")
        return Observed(self.name, data=dict(self.have), notes=["version 0.13.5"])

    def diff(self, observed: Observed) -> tuple[list[Change], list[str]]:
        out = []
        for key, value in self.want.items():
            if key not in observed.data:
                needs = tuple(f"{self.name}:{r}" for r in self.want if key.startswith(r + "-"))
                out.append(Change(self.name, Action.CREATE, (key,), None, value, requires=needs))
            elif observed.data[key] != value:
                out.append(Change(self.name, Action.UPDATE, (key,), observed.data[key], value))
        for key in observed.data:
            if key not in self.want:
                out.append(Change(self.name, Action.DELETE, (key,), observed.data[key], None))
        return out, []

    async def apply(self, change: Change, progress: Progress) -> None:
        key = str(change.path[0])
        await asyncio.sleep(self.delay)
        if key in self.fail_on:
            raise self.fail_on[key]
        if change.action is Action.DELETE:
            del self.have[key]
        else:
            self.have[key] = change.after
        self.applied.append(key)
        if self.log is not None:
            self.log.append(f"{self.name}:{key}")

    def disrupts(self, change: Change) -> None:
        return None

    def abandonable(self, change: Change) -> bool:
        return False

    async def close(self) -> None:
        pass


async def test_converged_targets_plan_nothing_and_exit_0() -> None:
    t = FakeTarget("a", {"x": 1}, {"x": 1})
    plan = await engine.plan([t])
    assert plan.changes == () and plan.exit_code(detailed=True) == 0


async def test_plan_then_apply_converges_and_second_plan_is_empty() -> None:
    t = FakeTarget("a", {"x": 1, "old": 0}, {"x": 2, "y": 3})
    plan = await engine.plan([t])
    assert [(c.action, c.path_text) for c in plan.changes] == [
        (Action.UPDATE, "x"), (Action.CREATE, "y"), (Action.DELETE, "old")]
    assert plan.exit_code(detailed=True) == 2 and plan.exit_code() == 0
    report = await engine.apply(plan, [t])
    assert report.ok and t.have == {"x": 2, "y": 3}
    assert (await engine.plan([t])).changes == ()


async def test_requirements_run_first_and_failures_skip_dependents() -> None:
    log: list[str] = []
    t = FakeTarget("a", {}, {"base": 1, "base-derived": 2, "other": 3}, log=log, delay=0.01,
                   fail_on={})
    plan = await engine.plan([t])
    derived = next(c for c in plan.changes if c.path_text == "base-derived")
    assert derived.requires == ("a:base",)
    await engine.apply(plan, [t], limits=engine.Limits(per_target=4))
    assert log.index("a:base") < log.index("a:base-derived")

    t2 = FakeTarget("b", {}, {"base": 1, "base-derived": 2, "other": 3},
                    fail_on={"base": PermanentError("pull model manifest: file does not exist")})
    report = await engine.apply(await engine.plan([t2]), [t2])
    status = {r.change.path_text: (r.status, r.message) for r in report.results}
    assert status["base"] == (Status.FAILED, "pull model manifest: file does not exist")
    assert status["base-derived"][0] is Status.SKIPPED_DEPENDENCY
    assert status["other"][0] is Status.APPLIED
    assert report.exit_code() == 1


async def test_one_target_failing_does_not_stop_the_others() -> None:
    down = FakeTarget("ollama/gpu-2", {}, {"m": 1}, unreachable=True)
    flaky = FakeTarget("ollama/gpu-3", {}, {"m": 1}, fail_on={"m": TemporaryError("disk full")})
    fine = FakeTarget("ollama/gpu-1", {}, {"m": 1})
    plan = await engine.plan([fine, down, flaky])
    assert [p.target for p in plan.problems] == ["ollama/gpu-2"]
    assert plan.exit_code() == 1
    report = await engine.apply(plan, [fine, down, flaky])
    assert fine.have == {"m": 1}
    assert [(r.change.target, r.status) for r in report.failed] == [("ollama/gpu-3", Status.FAILED)]
    errors = report.to_json()["errors"]
    assert {"target": "ollama/gpu-2", "message": "unreachable: connection refused"} in errors
    assert {"target": "ollama/gpu-3", "message": "m: disk full"} in errors


async def test_a_bug_in_a_target_is_reported_not_raised() -> None:
    t = FakeTarget("a", {}, {"m": 1}, fail_on={"m": KeyError("boom")})
    report = await engine.apply(await engine.plan([t]), [t])
    assert report.results[0].status is Status.FAILED and "KeyError" in report.results[0].message


async def test_per_target_limit_serialises_changes_on_one_target() -> None:
    running = 0
    peak = 0

    class Counting(FakeTarget):
        async def apply(self, change: Change, progress: Progress) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    t = Counting("a", {}, {"p": 1, "q": 2, "r": 3})
    await engine.apply(await engine.plan([t]), [t], limits=engine.Limits(per_target=1))
    assert peak == 1


async def test_cancellation_marks_the_rest_and_propagates() -> None:
    seen = []
    t = FakeTarget("a", {}, {"p": 1, "q": 2}, delay=5)
    task = asyncio.ensure_future(engine.apply(await engine.plan([t]), [t], on_result=seen.append))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen and all(r.status is Status.CANCELLED for r in seen)


def test_render_text_and_json() -> None:
    changes = (
        Change("openwebui", Action.UPDATE, ("models", "codestral:22b", "params", "temperature"), 0.8, 0.1),
        Change("openwebui", Action.UPDATE, ("settings", "api_key"), "old-secret", "new-secret", secret=True),
        Change("ollama/gpu-1", Action.CREATE, ("models", "qwq:32b"), note="pull"),
        Change("ollama/gpu-1", Action.DELETE, ("models", "old:1b"), before="old:1b"),
        Change("openwebui", Action.DELETE, ("models", "qwq:32b", "params", "top_k"), before=20),
    )
    from reconciler.plan.changes import Plan
    plan = Plan(changes)
    console = Console(record=True, width=200, color_system=None)
    render.print_plan(plan, console)
    text = console.export_text()
    assert '~ models."codestral:22b".params.temperature: 0.8 → 0.1' in text
    assert "+ models.\"qwq:32b\"  (pull)" in text
    assert '- models."old:1b"\n' in text
    assert '- models."qwq:32b".params.top_k (was 20)' in text
    assert "Plan: 1 to create, 2 to change, 2 to delete." in text
    assert "secret" not in text.replace("(secret)", "") and "new-secret" not in text
    data = json.loads(render.to_json(plan))
    assert data["changes"][0] == {"target": "openwebui", "action": "update",
                                  "path": 'models."codestral:22b".params.temperature', "before": 0.8, "after": 0.1}
    assert data["changes"][1]["after"] == "(secret)" and data["errors"] == []


def test_colour_only_on_a_terminal() -> None:
    plan_changes = (Change("x", Action.CREATE, ("m",)),)
    from reconciler.plan.changes import Plan
    piped = Console(record=True, force_terminal=False)
    render.print_plan(Plan(plan_changes), piped)
    assert "\x1b[" not in piped.export_text(styles=False)
    tty = Console(record=True, force_terminal=True, color_system="standard")
    render.print_plan(Plan(plan_changes), tty)
    assert "\x1b[32m" in tty.export_text(styles=True)
