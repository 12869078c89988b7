"""The shape every target has; the engine knows nothing else about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.plan.changes import Change


@dataclass
class Observed:
    """What a target saw. `error` set means it could not be observed (the value, not an exception)."""

    target: str
    data: Any = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class Progress(Protocol):
    """Where long work (pulls, uploads) reports how far it got."""

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None: ...

    def done(self, task: str, status: str = "") -> None: ...


class Target(Protocol):
    """One thing ollafleet owns: an Ollama node ("ollama/gpu-1") or Open WebUI ("openwebui").

    observe() only reads. diff() is pure: an empty list means converged. apply() makes exactly
    one change from that list, is safe to repeat, and raises TemporaryError or PermanentError.
    """

    name: str

    async def observe(self) -> Observed: ...

    def diff(self, observed: Observed) -> tuple[list[Change], list[str]]:
        """Return (changes, notes); notes are facts worth reporting that are not changes."""
        ...

    async def apply(self, change: Change, progress: Progress) -> None: ...

    async def close(self) -> None: ...
