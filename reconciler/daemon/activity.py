"""What the running pass is doing right now, for /status, the table and the page."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from reconciler.plan import render
from reconciler.plan.changes import ChangeResult, Plan
from reconciler.targets.base import Progress


class Activity:
    """Filled by the daemon during a pass; `current` is None between passes."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = None

    def begin(self, reason: str) -> None:
        self.current = {"reason": reason, "started": time.time(), "phase": "reading the servers",
                        "changes": 0, "done": 0, "pending": [], "tasks": {}}

    def planned(self, plan: Plan, *, suspended: bool) -> None:
        if self.current is None:
            return
        n = len(plan.changes)
        self.current["changes"] = n
        self.current["pending"] = [f"{c.target}: {render.change_text(c)}" for c in plan.changes]
        self.current["phase"] = ("suspended: reporting only" if suspended else
                                 f"applying {n} change(s)" if n else "no changes to make")

    def end(self) -> None:
        self.current = None

    def progress(self, inner: Progress) -> Progress:
        return _Tracked(self, inner)

    def on_result(self, inner: Callable[[ChangeResult], None]) -> Callable[[ChangeResult], None]:
        def record(result: ChangeResult) -> None:
            if self.current is not None:
                self.current["done"] += 1
                done = f"{result.change.target}: {render.change_text(result.change)}"
                self.current["pending"] = [p for p in self.current["pending"] if p != done]
            inner(result)
        return record


def describe(cur: dict[str, Any]) -> str:
    """The one-line text of an activity dict (also used on /status data by the CLI)."""
    line = f"{cur.get('phase', 'running')}"
    if cur.get("changes"):
        line += f", {cur.get('done', 0)} of {cur['changes']} done"
    for task, t in (cur.get("tasks") or {}).items():
        total, completed = t.get("total"), t.get("completed", 0)
        share = f"{100 * completed / total:.0f}%" if total else f"{completed / 1e9:.1f} GB"
        line += f"; {task} {share}" + (f" ({t['status']})" if t.get("status") else "")
    return line


class _Tracked:
    def __init__(self, activity: Activity, inner: Progress) -> None:
        self.activity, self.inner = activity, inner

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        if self.activity.current is not None:
            self.activity.current["tasks"][task] = {"completed": completed, "total": total, "status": status}
        self.inner.update(task, completed, total, status)

    def done(self, task: str, status: str = "") -> None:
        if self.activity.current is not None:
            self.activity.current["tasks"].pop(task, None)
        self.inner.done(task, status)
