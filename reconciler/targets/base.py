"""The shape every target has; the engine knows nothing else about them.

A target is typed by what it sees and what its changes carry: `Target[Seen, Work]` observes an
`Observed[Seen]` and plans `Change[Work]`s that only it applies. The engine holds targets of
different types side by side (`AnyTarget`) and never reads either payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from reconciler.plan.changes import Change

Seen = TypeVar("Seen")
Work = TypeVar("Work")


@dataclass
class Observed(Generic[Seen]):
    """What a target saw. `error` set means it could not be observed (the value, not an exception)."""

    target: str
    data: Seen | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # errors that do not stop the plan (plan exits 1)


@dataclass(frozen=True)
class Disruption:
    """While a change runs, `model` cannot be served by the balancer's node `node`."""

    node: str
    model: str


class Progress(Protocol):
    """Where long work (pulls, uploads) reports how far it got."""

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None: ...

    def done(self, task: str, status: str = "") -> None: ...


class Target(Protocol[Seen, Work]):
    """One thing ollafleet owns: an Ollama node ("ollama/gpu-1") or Open WebUI ("openwebui").

    observe() only reads. diff() is pure: an empty list means converged. apply() makes exactly
    one change from that list, is safe to repeat, and raises TemporaryError or PermanentError.
    """

    name: str

    async def observe(self) -> Observed[Seen]: ...

    def diff(self, observed: Observed[Seen]) -> tuple[list[Change[Work]], list[str]]:
        """Return (changes, notes); notes are facts worth reporting that are not changes."""
        ...

    async def apply(self, change: Change[Work], progress: Progress) -> None: ...

    def disrupts(self, change: Change[Work]) -> Disruption | None:
        """The model a change leaves unusable on a balancer node while it runs, if any."""
        ...

    def abandonable(self, change: Change[Work]) -> bool:
        """True when cutting the change off costs nothing (a pull resumes where it stopped)."""
        ...

    async def close(self) -> None: ...


AnyTarget = Target[Any, Any]    # a target of any kind, as the engine and the daemon hold them


class Wrapper(Generic[Seen, Work]):
    """A target around another one that changes only how `apply` runs (drains, fencing): every
    other call goes to `inner`, so a wrapper never hides what the target says of its changes."""

    def __init__(self, inner: Target[Seen, Work]) -> None:
        self.inner = inner
        self.name = inner.name

    async def observe(self) -> Observed[Seen]:
        return await self.inner.observe()

    def diff(self, observed: Observed[Seen]) -> tuple[list[Change[Work]], list[str]]:
        return self.inner.diff(observed)

    async def apply(self, change: Change[Work], progress: Progress) -> None:
        await self.inner.apply(change, progress)

    def disrupts(self, change: Change[Work]) -> Disruption | None:
        return self.inner.disrupts(change)

    def abandonable(self, change: Change[Work]) -> bool:
        return self.inner.abandonable(change)

    async def close(self) -> None:
        await self.inner.close()
