"""A deadline for one call to a server, whatever the server sends.

httpx's timeouts are per read: a server that answers 200 and then one byte every 2 s never
trips them. `Deadline` bounds the whole call (`total`) and, for pulls and uploads, the time
without progress (`idle`: the caller says what progress is by calling `progress()`).

    async with Deadline(total=20.0) as d:            # or Deadline(idle=600.0) for a stream
        ...; d.progress()
    # on expiry: TimeoutError; d.expired_text() says which bound was hit
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    def __init__(self, *, total: float | None = None, idle: float | None = None) -> None:
        self.total, self.idle = total, idle
        self._loop = asyncio.get_running_loop()
        self._start = self._last = self._loop.time()
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    def _when(self) -> float | None:
        bounds = []
        if self.total:
            bounds.append(self._start + self.total)
        if self.idle:
            bounds.append(self._last + self.idle)
        return min(bounds) if bounds else None

    def progress(self) -> None:
        """The server moved forward: the idle bound starts again. Cheap (a pull sends ~1e5
        lines): the one timer is only moved when it fires."""
        self._last = self._loop.time()

    def _arm(self) -> None:
        when = self._when()
        if when is not None:
            self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        when = self._when()
        if when is not None and self._loop.time() < when:
            self._arm()                      # progress since: wait for the new bound
        elif self._task is not None:
            self.expired = True
            self._task.cancel()

    def expired_text(self) -> str:
        now = self._loop.time()
        if self.total and now >= self._start + self.total - 0.01:
            return f"no complete answer within {self.total:g} s"
        return f"no progress for {self.idle:g} s"

    async def __aenter__(self) -> Deadline:
        self._task = asyncio.current_task()
        self._arm()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.expired and self._task is not None and self._task.uncancel() == 0 \
                and kind is asyncio.CancelledError:
            raise TimeoutError(self.expired_text()) from exc
