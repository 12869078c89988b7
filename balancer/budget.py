"""The request bodies the balancer holds at once, bounded in total.

Each body it reads to route (an inference request, up to max_body) stays in memory until its
answer ends, as bytes and while it is decoded; eight 60 MB chats at once took the process past
1 GB. A body is counted before it is read (its Content-Length, or chunk by chunk when it has
none) and freed when its request ends. When the total would pass the budget, the request waits
for room without reading further (the client's TCP window fills) for up to the queue timeout,
then is answered 503 with Retry-After. One body alone always fits.
"""
from __future__ import annotations

import asyncio
import time

BODIES_PER_BUDGET = 4  # the default budget: this many bodies of max_body


class BodyBudget:
    def __init__(self) -> None:
        self.held = 0
        self._freed = asyncio.Event()

    def try_take(self, size: int, limit: int) -> bool:
        if self.held and self.held + size > limit:
            return False
        self.held += size
        return True

    async def take(self, size: int, limit: int, wait: float) -> bool:
        """Count `size` bytes in, waiting up to `wait` s for room; False: no room in time."""
        deadline = time.monotonic() + wait
        while not self.try_take(size, limit):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()
        self._freed = asyncio.Event()
