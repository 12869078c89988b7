"""Value types of a plan: what must change, and what happened when it was applied."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union


class Action(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


REDACTED = "(secret)"

# what a change shows as before/after: a value as the file or a server spells it
Value = Union[None, bool, int, float, str, list["Value"], tuple["Value", ...], dict[str, "Value"]]
Work = TypeVar("Work", covariant=True)      # a target's own payload: what its apply must do


def render_path(path: tuple[str | int, ...]) -> str:
    """("models", "qwq:32b", "num_ctx") → models."qwq:32b".num_ctx; ("nodes", 0) → nodes[0]"""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        plain = text.replace("_", "").replace("-", "").isalnum()
        out += ("." if out else "") + (text if plain else '"' + text.replace('"', '\\"') + '"')
    return out


@dataclass(frozen=True)
class Change(Generic[Work]):
    """One change to one thing a target owns.

    `target` names the target instance ("ollama/gpu-1", "openwebui"); `path` locates the
    thing inside it; `requires` holds keys of changes that must succeed first; `secret`
    tells renderers to hide before/after; `data` is the target's own payload for apply, of
    the type its Target declares (only that target reads it).
    """

    target: str
    action: Action
    path: tuple[str | int, ...]
    before: Value = None
    after: Value = None
    requires: tuple[str, ...] = ()
    secret: bool = False
    note: str = ""
    data: Work | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.target}:{render_path(self.path)}"

    @property
    def path_text(self) -> str:
        return render_path(self.path)

    def to_json(self) -> dict[str, Value]:
        hide = self.secret
        return {
            "target": self.target,
            "action": self.action.value,
            "path": self.path_text,
            "before": REDACTED if hide and self.before is not None else self.before,
            "after": REDACTED if hide and self.after is not None else self.after,
        }


WARNING = "WARNING: "    # a note that starts so says the network will not work as the file says


def is_warning(note: str) -> bool:
    return note.startswith(WARNING)


@dataclass(frozen=True)
class TargetProblem:
    """A target that could not be observed or planned (unreachable, bad credentials...)."""

    target: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "message": self.message}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change[object], ...] = ()
    problems: tuple[TargetProblem, ...] = ()
    notes: tuple[TargetProblem, ...] = ()  # warnings and facts reported, not changed

    def exit_code(self, detailed: bool = False) -> int:
        if self.problems:
            return 1
        if detailed and self.changes:
            return 2
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [c.to_json() for c in self.changes],
            "errors": [p.to_json() for p in self.problems],
            "notes": [n.to_json() for n in self.notes],
        }


class Status(str, enum.Enum):
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED_DEPENDENCY = "skipped_dependency"
    CANCELLED = "cancelled"
    HELD = "held"               # not tried: it failed before and its retry is not due yet


@dataclass(frozen=True)
class ChangeResult:
    change: Change[object]
    status: Status
    message: str = ""
    duration: float = 0.0
    permanent: bool = False     # a failure that retrying will not mend (PermanentError)
    retry_after: float = 0.0    # a failure's own least wait before a retry, in seconds

    def to_json(self) -> dict[str, Any]:
        return {**self.change.to_json(), "status": self.status.value, "message": self.message}


@dataclass(frozen=True)
class PassReport:
    plan: Plan
    results: tuple[ChangeResult, ...] = ()
    started: float = 0.0
    finished: float = 0.0

    @property
    def failed(self) -> tuple[ChangeResult, ...]:
        return tuple(r for r in self.results if r.status is not Status.APPLIED)

    @property
    def ok(self) -> bool:
        return not self.plan.problems and not self.failed

    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [r.to_json() for r in self.results],
            "errors": [p.to_json() for p in self.plan.problems]
            + [{"target": r.change.target, "message": f"{r.change.path_text}: {r.message}"}
               for r in self.failed],
            "notes": [n.to_json() for n in self.plan.notes],
        }
