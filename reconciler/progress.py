"""Progress of long work (pulls, uploads): bars on a terminal, a periodic line in a log."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

log = logging.getLogger("ollafleet.progress")


class BarProgress:
    """One rich bar per task ("gpu-1 pull codestral:22b"), for a terminal."""

    def __init__(self, console: Console) -> None:
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                              console=console, transient=False)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BarProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        if task not in self._tasks:
            self._tasks[task] = self._bars.add_task(task, total=total, status=status)
        self._bars.update(self._tasks[task], completed=completed, total=total, status=status)

    def done(self, task: str, status: str = "") -> None:
        if task in self._tasks:
            bar = self._bars.tasks[self._tasks[task]]
            self._bars.update(self._tasks[task], completed=bar.total or bar.completed, status=status)


class LogProgress:
    """A line per task at most every `every` seconds, for logs and pipes."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        now = time.monotonic()
        if now - self._last.get(task, -self.every) < self.every:
            return
        self._last[task] = now
        share = f"{100 * completed / total:.0f}% of {total / 1e9:.1f} GB" if total else f"{completed / 1e9:.1f} GB"
        log.info("%s: %s %s", task, share, status)

    def done(self, task: str, status: str = "") -> None:
        self._last.pop(task, None)
        log.info("%s: %s", task, status or "done")
