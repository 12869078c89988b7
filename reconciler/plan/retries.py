"""Each item's last failure and when it may be tried again: the policy an error carries.

An item is one change key ("ollama/gpu-1:models.\"qwq:32b\""). A temporary failure (a node
that did not answer, a dropped stream, a full disk) backs that item off: 15 s, then doubling up
to 10 min; a success forgets it. A permanent failure (a model no registry has, a parameter
Ollama refuses) is not tried again for the same file revision and the same observed state; only
after the longest backoff, since the world can change under an unchanged file (a registry gets
the model). A newer file, or a server that now shows something else for the item, makes it due
at once: that is a new attempt, not a retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.plan.changes import Change, ChangeResult, Status


@dataclass(frozen=True)
class Backoff:
    base: float = 15.0      # seconds before the first retry of a temporary failure
    cap: float = 600.0      # the longest wait; also how long a permanent failure is held

    def delay(self, failures: int, *, permanent: bool) -> float:
        if permanent:
            return self.cap
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


@dataclass
class Failure:
    """The last failure of one item."""

    target: str
    path: str
    error: str
    permanent: bool
    failures: int            # in a row, for the same revision and observed state
    next_retry: float        # wall-clock time (time.time()) from which it is tried again
    revision: str            # sha256 of the file the failed attempt applied
    seen: tuple[Any, ...]    # (action, before, after): what the server showed then

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "path": self.path, "error": self.error,
                "kind": "permanent" if self.permanent else "temporary", "failures": self.failures,
                "next_retry": self.next_retry, "attempted_revision": self.revision}


def _seen(change: Change[object]) -> tuple[Any, ...]:
    return (change.action, change.before, change.after)


class Retries:
    """The failures of the items that have not succeeded since; the daemon keeps one."""

    def __init__(self, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.time) -> None:
        self.backoff = backoff
        self.clock = clock
        self.failures: dict[str, Failure] = {}

    def held(self, change: Change[object], revision: str) -> str | None:
        """Why `change` must not be tried now, or None when it is due."""
        f = self.failures.get(change.key)
        if f is None or f.revision != revision or f.seen != _seen(change):
            return None
        wait = f.next_retry - self.clock()
        if wait <= 0:
            return None
        kind = "permanent: not retried for this file and this server state" if f.permanent else "temporary"
        return f"{f.error} ({kind}; next try in {_duration(wait)})"

    def record(self, result: ChangeResult, revision: str) -> None:
        """Learn from one applied change: a success forgets, a failure backs off."""
        key = result.change.key
        if result.status is Status.APPLIED:
            self.failures.pop(key, None)
            return
        if result.status is not Status.FAILED:
            return       # held, skipped or cancelled: nothing was tried
        old = self.failures.get(key)
        same = old is not None and old.revision == revision and old.seen == _seen(result.change)
        count = old.failures + 1 if same and old is not None else 1
        wait = max(self.backoff.delay(count, permanent=result.permanent), result.retry_after)
        self.failures[key] = Failure(result.change.target, result.change.path_text, result.message,
                                     result.permanent, count, self.clock() + wait, revision, _seen(result.change))

    def keep_only(self, planned: Iterable[Change[object]], observed: Iterable[str]) -> None:
        """Forget the items of the targets read this pass that no longer need a change."""
        keys = {c.key for c in planned}
        seen = set(observed)
        self.failures = {k: f for k, f in self.failures.items() if k in keys or f.target not in seen}

    def next_due(self) -> float | None:
        """The earliest wall-clock time at which a held item is due again."""
        return min((f.next_retry for f in self.failures.values()), default=None)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"item": key, **f.to_json()} for key, f in self.failures.items()]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
