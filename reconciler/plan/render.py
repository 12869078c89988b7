"""Show a plan or a pass report: `+ create`, `~ path: before → after`, `- delete`; or JSON."""

from __future__ import annotations

import json
from itertools import groupby
from typing import Any

from rich.console import Console
from rich.markup import escape

from reconciler.plan.changes import REDACTED, Action, Change, ChangeResult, PassReport, Plan, Status, is_warning
from reconciler.scrub import scrub, scrub_data

_SIGN = {Action.CREATE: ("+", "green"), Action.UPDATE: ("~", "yellow"),
         Action.REPLACE: ("±", "yellow"), Action.DELETE: ("-", "red")}


def shown(text: str) -> str:
    """Text for the console: secrets scrubbed, then rich markup escaped."""
    return escape(scrub(text))


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def change_text(change: Change[object]) -> str:
    """`~ path: before → after` without colour; secrets hidden."""
    sign, _ = _SIGN[change.action]
    text = f"{sign} {change.path_text}"
    if change.action in (Action.UPDATE, Action.REPLACE):
        before = REDACTED if change.secret else show_value(change.before)
        after = REDACTED if change.secret else show_value(change.after)
        text += f": {before} → {after}"
    elif change.action is Action.CREATE and change.after is not None and not change.secret:
        text += f" = {show_value(change.after)}"
    elif (change.action is Action.DELETE and change.before is not None and not change.secret
          and change.before != change.path[-1]):
        text += f" (was {show_value(change.before)})"
    if change.note:
        text += f"  ({change.note})"
    return text


def change_line(change: Change[object]) -> str:
    return f"[{_SIGN[change.action][1]}]{shown(change_text(change))}[/]"


def summary(changes: tuple[Change[object], ...], unread: int = 0, warnings: int = 0) -> str:
    """The plan's last line; `unread` targets could not be read, so their changes are unknown;
    `warnings` say where the network will not work as the file says, changes or not."""
    count = {a: sum(1 for c in changes if c.action is a) for a in Action}
    gap = (f" {unread} target(s) could not be read (errors above): their changes are unknown."
           if unread else "")
    if warnings:
        gap += f" {warnings} warning(s) above: people will not get what the file declares there."
    if not changes:
        if warnings and not unread:
            return "Nothing to change, but the network does not match the file." + gap
        return ("No changes: the network matches the file." if not unread
                else "No changes on the targets that could be read." + gap)
    return (f"Plan: {count[Action.CREATE]} to create, {count[Action.UPDATE] + count[Action.REPLACE]} to change, "
            f"{count[Action.DELETE]} to delete." + gap)


def print_plan(plan: Plan, console: Console) -> None:
    for target, changes in groupby(plan.changes, key=lambda c: c.target):
        console.print(f"[bold]{shown(target)}[/]")
        for change in changes:
            console.print("  " + change_line(change), highlight=False)
    warnings = [n for n in plan.notes if is_warning(n.message)]
    for note in plan.notes:
        if not is_warning(note.message):
            console.print(f"[cyan]note[/] {shown(note.target)}: {shown(note.message)}", highlight=False)
    for note in warnings:
        console.print(f"[yellow bold]warning[/] {shown(note.target)}: {shown(note.message.split(': ', 1)[1])}",
                      highlight=False)
    for problem in plan.problems:
        console.print(f"[red bold]error[/] {shown(problem.target)}: {shown(problem.message)}", highlight=False)
    console.print(summary(plan.changes, unread=len({p.target for p in plan.problems}), warnings=len(warnings)))


def result_line(result: ChangeResult) -> str:
    mark = {Status.APPLIED: "[green]ok[/]", Status.FAILED: "[red]FAILED[/]",
            Status.SKIPPED_DEPENDENCY: "[yellow]skipped[/]", Status.CANCELLED: "[yellow]cancelled[/]",
            Status.HELD: "[yellow]held[/]"}[result.status]
    tail = f": {shown(result.message)}" if result.message else ""
    return f"{mark} {shown(result.change.target)} {change_line(result.change)}{tail}"


def print_report(report: PassReport, console: Console) -> None:
    for problem in report.plan.problems:
        console.print(f"[red bold]error[/] {shown(problem.target)}: {shown(problem.message)}", highlight=False)
    done = sum(1 for r in report.results if r.status is Status.APPLIED)
    failed = len(report.failed)
    if not report.results and report.plan.changes:     # the file suspends changes
        console.print(f"Nothing applied: reconcile.suspend = true; {len(report.plan.changes)} change(s) "
                      "only reported.")
    elif not report.results:
        console.print("No changes: the network matches the file." if not report.plan.problems
                      else "Nothing applied.")
    else:
        console.print(f"Applied {done} of {len(report.results)} changes" + (f", {failed} not applied." if failed else "."))


def to_json(obj: Plan | PassReport) -> str:
    return json.dumps(scrub_data(obj.to_json()), indent=2, default=str)
