"""The balancer's own queue (when queue_timeout > 0): requests wait here, not in Ollama.

Every waiting request is re-planned (cost.plan) whenever the fleet changes: a node frees,
a request arrives or leaves, a poll changes a node. A request goes out when its cheapest
node is free now; until then it waits here, so the choice stays open (another node may
free first) and no node's silence timer counts the wait. A request whose wait alone would
exceed the queue timeout is answered 503 with Retry-After at once, when that estimate comes
from the node's learned rates (defaults are not trusted to refuse).
"""
from __future__ import annotations

import itertools
from collections import Counter
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .classify import RequestInfo
from .cost import Entry, Estimate, Hold, Job, NodeCost, estimate, plan, priority, tokens_of
from .fleet import Fleet
from .knowledge import Knowledge
from .scheduling import Pick, Reject, Wait

Decided = Pick | Hold | Reject | Wait

_NUM_CTX = re.compile(rb'"num_ctx"\s*:\s*(\d+)')
REPLAN = 2.0  # seconds: re-plan at least this often while waiting (estimates age)


def job_of(info: RequestInfo, body: bytes, runner_of: Mapping[str, str] = {}) -> Job:
    """The cost model's view of a request: model (named as the runner it needs: a -v1 model
    by its base, see params.py), num_ctx, size of the prompt."""
    m = _NUM_CTX.search(body) if b'"num_ctx"' in body else None
    model = runner_of.get(info.model, info.model) if info.model is not None else None
    return Job(model, int(m.group(1)) if m else None, tokens_of(len(body)), info.conversation)


@dataclass(frozen=True)
class TooLong:
    """503 at once: the estimated wait exceeds the queue timeout."""
    wait: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))

    @property
    def message(self) -> str:
        return (f"no available servers: the estimated wait ({self.wait:.0f} s) exceeds the "
                f"queue timeout; retry later")


class WaitList:
    def __init__(self, fleet: Fleet, knowledge: Knowledge) -> None:
        self.fleet = fleet
        self.knowledge = knowledge
        self.waiting: dict[int, tuple[str, int, Entry]] = {}
        self._ids = itertools.count()
        self._memo: tuple[tuple[int, int], dict[str, NodeCost], dict[int, Decided]] | None = None

    def estimate_for(self, node: str, job: Job) -> Estimate:
        n = self.fleet.nodes[node]  # what costs() reads of its view, without building one
        cost = self.knowledge.cost(node, n.spec.max_concurrent, n.loaded, self.knowledge.now())
        return estimate(node, cost, job)

    def _plan(self) -> tuple[dict[str, NodeCost], dict[int, Decided]]:
        """One plan of every waiting request per change (of the fleet, of the list, or of
        REPLAN seconds passing), shared by all the waiters that wake for that change."""
        k = self.knowledge
        key = (self.fleet.version, int(k.now() / REPLAN))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1], self._memo[2]
        snap = self.fleet.snapshot()
        costs = k.costs(snap.nodes)
        decisions = plan(snap, costs, priority(list(self.waiting.values())), k.demand())
        k.queued = Counter(x.estimate.node for x in decisions.values() if isinstance(x, Hold))
        self._memo = (key, costs, decisions)
        return costs, decisions

    async def place(self, info: RequestInfo, job: Job, user: str, tried: frozenset[str],
                    deadline: float) -> tuple[Pick | Reject | TooLong, Estimate | None]:
        """Wait until this request's best node is free; the caller reserves it at once."""
        eid = next(self._ids)
        self.waiting[eid] = (user, eid, Entry(eid, info, job, tried, user))
        self._memo = None
        metrics = self.fleet.metrics
        since = time.monotonic()
        first, counted = True, False
        try:
            while True:
                costs, decisions = self._plan()
                d = decisions[eid]
                if self.knowledge.hand_off and isinstance(d, Hold) and d.estimate.load == 0:
                    return Pick(d.estimate.node, "handed to its queue (model loaded)"), d.estimate
                if isinstance(d, Pick):
                    return d, estimate(d.node, costs[d.node], job)
                if isinstance(d, Reject):
                    return d, None
                remaining = deadline - time.monotonic()
                # only an estimate from learned rates is trusted to refuse at once
                wait = d.estimate.start * self.knowledge.scale \
                    if isinstance(d, Hold) and d.estimate.learned else 0.0
                if first and wait > remaining:
                    return TooLong(wait), None
                if remaining <= 0:
                    return Reject(503, "all_busy", "no available servers: every node is busy"
                                  " (queue timeout reached)"), None
                if not counted:
                    metrics.queued += 1
                    counted = True
                first = False
                await self.fleet.wait_changed(min(remaining, REPLAN * self.knowledge.scale))
        finally:
            del self.waiting[eid]
            self._memo = None
            if not self.waiting:
                self.knowledge.queued = {}
            if counted:
                metrics.queued -= 1
            metrics.observe_queue_wait(time.monotonic() - since)
            self.fleet.notify()  # the others' plans counted on this one

