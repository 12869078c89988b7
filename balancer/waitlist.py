"""The balancer's own queue (when queue_timeout > 0): requests wait here, not in Ollama.

Waiting requests are re-planned (cost.plan) whenever the fleet changes: a node frees,
a request arrives or leaves, a poll changes a node (those a change cannot let start, once
the free slots are handed out, keep their last Hold; all are planned afresh every FULL s). A request goes out when its cheapest
node is free now; until then it waits here, so the choice stays open (another node may
free first) and no node's silence timer counts the wait. A request whose wait alone would
exceed the queue timeout is answered 503 with Retry-After at once, when that estimate comes
from the node's learned rates (defaults are not trusted to refuse).

Order (a user's place is in the queue, not on a node):
- people before Open WebUI's task requests (tasks.py): a task is planned only on what the
  people waiting leave, never on a node a person is planned on;
- people in a fair queue by user (start-time fair queuing): a request's tag is one past
  the later of the user's previous request and the last tag served, so a user with many
  requests waiting takes turns with one who just arrived instead of going first; tasks in
  arrival order (they take no turn of their user's);
- a free node goes to the first request in that order that can run there without a model
  load, even when it planned to wait for another node: a later request never takes it.
A task runs only where the task model is loaded while some node holds it (no load for a
title), and waits at most task_timeout (then 503: Open WebUI drops the title, tags or
follow-ups, as for any failed task). A person waiting for a node that only tasks keep busy
stops one of them (the proxy's preempt; the task queues again). A waiting request whose
client has gone is dropped. All waiters share one plan until something changes.
"""
from __future__ import annotations

import itertools
from collections import Counter
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .classify import RequestInfo
from .cost import Entry, Estimate, Hold, Job, NodeCost, _candidates, estimate, plan, tokens_of
from .fleet import Fleet
from .knowledge import Knowledge
from .scheduling import Pick, Reject, Snapshot, Wait

_NUM_CTX = re.compile(rb'"num_ctx"\s*:\s*(\d+)')
REPLAN = 2.0  # seconds: re-plan at least this often while waiting (estimates age)
GONE_CHECK = 0.5  # seconds: how soon a queued request notices that its client left
FRESH = 0.02  # seconds: a plan this young is shared by every waiter (estimates age slowly)
FULL = 0.5  # seconds: every waiter is planned afresh at least this often (estimates age)


def _never() -> bool:
    return False


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


@dataclass(frozen=True)
class Waiting:
    user: str
    tag: int  # fair-queue tag: lower goes first
    entry: Entry

    @property
    def task(self) -> bool:
        return self.entry.request.task is not None


def order(waiting: list[Waiting]) -> list[Entry]:
    """People first, then tasks; each by fair tag, then arrival."""
    return [w.entry for w in sorted(waiting, key=lambda w: (w.task, w.tag, w.entry.id))]


Decision = Pick | Hold | Reject | Wait


def no_overtaking(snap: Snapshot, costs: dict[str, NodeCost], entries: list[Entry],
                  decisions: dict[int, Decision]) -> dict[int, Decision]:
    """A node free now goes to the earliest entry that can run there without a model load,
    even one that planned to wait for another node (its estimate may be off: a later request
    taking each node as it frees would keep it waiting for good)."""
    out = dict(decisions)
    held: list[Entry] = []
    for e in entries:
        d = out[e.id]
        if isinstance(d, Hold):
            held.append(e)
        elif isinstance(d, Pick) and not d.second_chance and held:
            cost = costs.get(d.node, NodeCost())
            for h in held:
                if d.node in {v.name for v in _candidates(snap, h)} \
                        and estimate(d.node, cost, h.job).load == 0:
                    out[h.id] = Pick(d.node, "first in the queue that can run here")
                    out[e.id] = Hold(estimate(d.node, cost, e.job))
                    held.remove(h)
                    held.append(e)
                    break
    return out


class WaitList:
    def __init__(self, fleet: Fleet, knowledge: Knowledge) -> None:
        self.fleet = fleet
        self.knowledge = knowledge
        self.waiting: dict[int, Waiting] = {}
        self._ids = itertools.count()
        self._served = 0  # the tag of the last request that left the queue for a node
        self._last: dict[str, int] = {}  # user -> tag of their latest request
        self._version = 0  # changes to `waiting`
        # the proxy's: how many task requests run on a node, and stop one of them there
        self.tasks_on: Callable[[str], int] = lambda node: 0
        self.preempt: Callable[[str], None] = lambda node: None
        self._cache: tuple[tuple[int, int], float, dict[str, NodeCost],
                           dict[int, Decision]] | None = None
        self._full = 0.0  # when every waiter was last planned afresh

    def _decisions(self) -> tuple[dict[str, NodeCost], dict[int, Decision]]:
        """One plan for every waiting request, made again only after a change (a node, a
        request in or out) or once it is FRESH old: many waiters cost one plan, not one each."""
        key = (self.fleet.version, self._version)
        now = time.monotonic()
        if self._cache is not None and self._cache[0] == key and now - self._cache[1] < FRESH:
            return self._cache[2], self._cache[3]
        snap = self.fleet.snapshot()
        costs = self.knowledge.costs(snap.nodes)
        entries = order(list(self.waiting.values()))
        # tasks behind the first few wait behind those in any plan: they are not weighed
        tasks = [e for e in entries if e.request.task is not None]
        planned = entries[:len(entries) - len(tasks) + len(snap.nodes)]
        # the last plan's Holds stand for a change that frees no slot, up to FULL seconds
        kept = self._cache[3] if self._cache is not None and now - self._full < FULL * self.knowledge.scale else None
        if kept is None:
            self._full = now
        decisions = plan(snap, costs, planned, self.knowledge.demand(), kept)
        if len(planned) < len(entries):
            last = decisions[planned[-1].id]
            node = last.estimate.node if isinstance(last, Hold) else getattr(last, "node", None)
            for e in entries[len(planned):]:
                decisions[e.id] = Hold(estimate(node, costs[node], e.job)) \
                    if node in costs else Wait("behind other tasks")
        decisions = no_overtaking(snap, costs, entries, decisions)
        self.knowledge.queued = Counter(
            x.estimate.node for x in decisions.values() if isinstance(x, Hold))
        self._cache = (key, now, costs, decisions)
        self._make_way(entries, decisions)
        return costs, decisions

    def _make_way(self, entries: list[Entry], decisions: dict[int, Decision]) -> None:
        """A person waiting for a node that only Open WebUI tasks keep busy: stop one of them
        (it goes back to the queue), so that no task delays a person who could start now."""
        wanted: set[str] = set()
        for e in entries:
            d = decisions[e.id]
            if e.request.task is None and isinstance(d, Hold) and d.estimate.load == 0:
                wanted.add(d.estimate.node)
        for name in wanted:
            node = self.fleet.nodes.get(name)
            if node is not None and node.in_flight + node.remote <= self.tasks_on(name):
                self.preempt(name)

    async def _wait(self, remaining: float, gone: Callable[[], bool]) -> None:
        """Until a change, the re-plan interval or the deadline; leave early if the client went."""
        end = time.monotonic() + min(remaining, REPLAN * self.knowledge.scale)
        while not gone():
            left = end - time.monotonic()
            if left <= 0 or await self.fleet.wait_changed(min(left, GONE_CHECK)):
                return

    def _tag(self, user: str) -> int:
        tag = max(self._served, self._last.get(user, 0)) + 1
        self._last[user] = tag
        return tag

    def _served_up_to(self, tag: int) -> None:
        if tag == 0:  # a task
            return
        self._served = max(self._served, tag)
        if len(self._last) > 1000:  # users with nothing left behind the served tag
            self._last = {u: t for u, t in self._last.items() if t > self._served}

    def estimate_for(self, node: str, job: Job) -> Estimate:
        n = self.fleet.nodes[node]  # what costs() reads of its view, without building one
        cost = self.knowledge.cost(node, n.spec.max_concurrent, n.loaded, self.knowledge.now())
        return estimate(node, cost, job)

    async def place(self, info: RequestInfo, job: Job, user: str, tried: frozenset[str],
                    deadline: float, gone: Callable[[], bool] = _never
                    ) -> tuple[Pick | Reject | TooLong, Estimate | None]:
        """Wait until this request's best node is free; the caller reserves it at once.
        A task's `deadline` is its task_timeout's; `gone()` says that the client disconnected:
        the request leaves the queue (Reject 499)."""
        eid = next(self._ids)
        task = info.task is not None
        # tasks queue in arrival order behind people: they take no turn of their user's
        tag = 0 if task else self._tag(user)
        self.waiting[eid] = Waiting(user, tag, Entry(eid, info, job, tried, user))
        self._version += 1
        metrics = self.fleet.metrics
        since = time.monotonic()
        first, counted = True, False
        try:
            while True:
                if gone():
                    metrics.client_cancelled_total += 1
                    return Reject(499, "gone", "the client disconnected while queued"), None
                costs, decisions = self._decisions()
                d = decisions[eid]
                if self.knowledge.hand_off and not task and isinstance(d, Hold) \
                        and d.estimate.load == 0:
                    self._served_up_to(tag)
                    return Pick(d.estimate.node, "handed to its queue (model loaded)"), d.estimate
                if isinstance(d, Pick):
                    self._served_up_to(tag)
                    return d, estimate(d.node, costs[d.node], job)
                if isinstance(d, Reject):
                    return d, None
                remaining = deadline - time.monotonic()
                # only an estimate from learned rates is trusted to refuse at once
                wait = d.estimate.start * self.knowledge.scale \
                    if isinstance(d, Hold) and d.estimate.learned else 0.0
                if first and wait > remaining:
                    return TooLong(wait), None
                if remaining <= 0 and task:
                    metrics.tasks.timed_out_total += 1
                    return Reject(503, "task_timeout", f"no available servers: Open WebUI's "
                                  f"{info.task} task waited {time.monotonic() - since:.0f} s "
                                  f"behind people's requests (task_timeout)"), None
                if remaining <= 0:
                    return Reject(503, "all_busy", "no available servers: every node is busy"
                                  " (queue timeout reached)"), None
                if not counted:
                    metrics.queued += 1
                    if task:
                        metrics.tasks.queued += 1
                    counted = True
                first = False
                await self._wait(remaining, gone)
        finally:
            del self.waiting[eid]
            self._version += 1
            if not self.waiting:
                self.knowledge.queued = {}
            waited = time.monotonic() - since
            if counted:
                metrics.queued -= 1
                if task:
                    metrics.tasks.queued -= 1
            metrics.observe_queue_wait(waited)
            if task:
                metrics.tasks.wait_seconds.observe(waited)
            self.fleet.notify()  # the others' plans counted on this one

