"""Pure cost model: estimated seconds to the first token of a request on each node.

No I/O, no clock. A node's estimate is
    time until one of its slots frees (its running requests, then the ones planned before)
  + a model load when it would switch model or reload for another num_ctx
  + prompt evaluation of the part of the prompt its slot has not cached
    (the slot keeps the last conversation's prompt and its generated answer).
Rates are per node and model, learned from Ollama's final chunk (knowledge.py), with
defaults from the issue's office (8-12 s loads, ~2,000 prompt tokens/s, ~30 tokens/s).

A choice's total cost is that estimate plus what an eviction costs others: a node that must
unload model M to load another adds, when it holds the last loaded copy of M among the
candidates and M is in recent demand, one load of M per other recent user of M (they would
pay it). So the last copy of a model in use is kept while the request can queue elsewhere
at a lower total. Among totals within TIE, the order is: no load, no such eviction, then
overwrite_rank, then the lower total.

Rates: a node's own learned rates for the model, else those learned by the other nodes of
its tier (capability, speed) for the model (knowledge.py), else the defaults.

`plan()` places every waiting request in priority order on its cheapest node, as if the
earlier ones already ran there (list scheduling): a request starts now only when its best
node is free now; otherwise it waits in the balancer and is re-planned on a change that frees a slot.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .classify import RequestInfo
from .conversation import Conversation
from .scheduling import NodeView, Pick, Reject, Reliability, Snapshot, Wait, decide

CHARS_PER_TOKEN = 4.0
# Totals this close (seconds) are a tie for the request: it goes where it needs no load, then
# where it evicts no last copy in demand, then where it overwrites no cached conversation, or
# the least recently used one (overwrite_rank).
TIE = 0.5
STALE = 300.0  # seconds: a cached conversation idle this long is taken as left


@dataclass(frozen=True)
class Rates:
    load: float = 10.0  # seconds to load the model
    prefill: float = 2000.0  # uncached prompt tokens per second
    gen: float = 30.0  # generated tokens per second
    answer: float = 250.0  # tokens in a typical answer


DEFAULT_RATES = Rates()


@dataclass(frozen=True)
class Job:
    """What the estimate needs to know of one request."""
    model: str | None
    num_ctx: int | None = None
    tokens: int = 0  # prompt tokens, roughly characters / 4
    conversation: Conversation | None = None


@dataclass(frozen=True)
class NodeCost:
    """What the balancer knows of a node's GPU, at snapshot time."""
    slots_free_in: tuple[float, ...] = (0.0,)  # seconds until each slot frees, one per slot
    model: str | None = None  # the model its runner holds (sent last, or polled)
    num_ctx: int | None = None  # ... and the num_ctx it was loaded with (None: the default)
    cached: Conversation | None = None  # the conversation its slot caches
    cached_tokens: int = 0  # that conversation's prompt + answer tokens
    rates: tuple[tuple[str, Rates], ...] = ()  # learned per model
    also_loaded: frozenset[str] = frozenset()  # other models its GPU holds (small ones fit)
    cached_idle: float = 0.0  # seconds since that conversation last ran (0: running now)
    shared: Mapping[str, Rates] = field(default_factory=dict)  # learned by its tier's nodes

    def rates_for(self, model: str | None) -> Rates:
        return self.learned_rates(model) or DEFAULT_RATES

    def learned_rates(self, model: str | None) -> Rates | None:
        """Its own rates for `model`, else its tier's (None: only the defaults)."""
        for name, r in self.rates:
            if name == model:
                return r
        return self.shared.get(model) if model is not None else None

    def holds(self) -> frozenset[str]:
        """The models its GPU holds."""
        return self.also_loaded | {self.model} if self.model is not None else self.also_loaded


@dataclass(frozen=True)
class Estimate:
    node: str
    start: float  # seconds until a slot takes it
    load: float
    prefill: float
    ttft: float  # start + load + prefill
    busy_for: float  # ttft + generation: when the slot frees again
    cached_tokens: int
    uncached_tokens: int
    learned: bool = False  # from learned rates (its own or its tier's), not the defaults


def tokens_of(chars: int) -> int:
    return int(chars / CHARS_PER_TOKEN)


def cached_prefix(previous: Conversation | None, new: Conversation | None) -> bool:
    """Does `new` resend `previous` whole (same model, tools, num_ctx) and add to it?"""
    if previous is None or new is None or previous.key != new.key:
        return False
    n = len(previous.messages)
    return 0 < n < len(new.messages) and new.messages[:n] == previous.messages


def estimate(name: str, cost: NodeCost, job: Job) -> Estimate:
    rates = cost.rates_for(job.model)
    start = min(cost.slots_free_in) if cost.slots_free_in else 0.0
    if job.model is not None and job.model != cost.model and job.model in cost.also_loaded:
        switch = False  # loaded beside the last one; its num_ctx is not known: assume it fits
    else:
        switch = job.model is not None and (cost.model != job.model
                                            or cost.num_ctx != job.num_ctx)
    load = rates.load if switch else 0.0
    cached = 0
    if not switch and cached_prefix(cost.cached, job.conversation):
        cached = min(cost.cached_tokens, job.tokens)
    uncached = max(0, job.tokens - cached)
    prefill = uncached / rates.prefill if rates.prefill > 0 else 0.0
    ttft = start + load + prefill
    gen = rates.answer / rates.gen if rates.gen > 0 else 0.0
    return Estimate(name, start, load, prefill, ttft, ttft + gen, cached, uncached,
                    cost.learned_rates(job.model) is not None)


def after(cost: NodeCost, job: Job, est: Estimate) -> NodeCost:
    """The node as it will be once `job` ran there (for planning the requests behind it)."""
    slots = sorted(cost.slots_free_in)
    slots[0] = est.busy_for
    rates = cost.rates_for(job.model)
    also = cost.also_loaded
    if job.model is not None and job.model != cost.model:
        # a load is taken to evict the others; a model loaded beside them keeps them
        also = frozenset() if est.load > 0 else (also | {cost.model or ""}) - {job.model, ""}
    return replace(cost, slots_free_in=tuple(slots), model=job.model or cost.model,
                   num_ctx=job.num_ctx if job.model else cost.num_ctx,
                   cached=job.conversation, cached_tokens=job.tokens + int(rates.answer),
                   also_loaded=also, cached_idle=0.0)


def holds(cost: NodeCost, view: NodeView, model: str | None) -> bool:
    """Does the node's GPU hold `model` (as sent last, or as the last poll listed)?"""
    return model is not None and (cost.model == model or model in cost.also_loaded
                                  or model in view.loaded)


def overwrite_rank(cost: NodeCost, est: Estimate) -> tuple[int, float]:
    """Which of tied nodes a request should take, lowest first: one where it continues its
    own conversation or overwrites none (an empty slot, or a conversation idle past STALE),
    then the one whose cached conversation ran least recently (as Ollama picks a slot), so
    that the conversation most likely to go on keeps its cache."""
    if cost.cached is None or est.cached_tokens > 0 or cost.cached_idle > STALE:
        return (0, 0.0)
    return (1, -cost.cached_idle)


@dataclass(frozen=True)
class Entry:
    """One request waiting in the balancer's queue."""
    id: int
    request: RequestInfo
    job: Job
    tried: frozenset[str] = frozenset()
    user: str = ""


# model -> the users who used it recently (knowledge.py): whom an eviction of it would cost
Demand = Mapping[str, frozenset[str]]


def evicts(cost: NodeCost, job: Job, est: Estimate) -> frozenset[str]:
    """The models a load for `job` on this node unloads (a load is taken to evict them all)."""
    if est.load <= 0 or job.model is None:
        return frozenset()
    return cost.holds() - {job.model}


def copies(costs: Mapping[str, NodeCost], names: list[str]) -> dict[str, int]:
    """Loaded copies of each model on the named nodes."""
    out: dict[str, int] = {}
    for name in names:
        cost = costs.get(name)
        if cost is not None:
            for m in cost.holds():
                out[m] = out.get(m, 0) + 1
    return out


def eviction_cost(cost: NodeCost, job: Job, est: Estimate, demand: Demand,
                  loaded: Mapping[str, int], user: str = "") -> float:
    """Seconds of loads that others pay when this choice unloads the last loaded copy of a
    model they use: one load of it per recent user other than the requester."""
    total = 0.0
    for m in evicts(cost, job, est):
        others = len(demand.get(m, frozenset()) - {user})
        if others and loaded.get(m, 0) <= 1:
            total += others * cost.rates_for(m).load
    return total


@dataclass(frozen=True)
class Hold:
    """Wait in the balancer: `estimate` is the best node's, with the requests before it."""
    estimate: Estimate


@dataclass
class _Plan:
    costs: dict[str, NodeCost]
    taken: dict[str, int] = field(default_factory=dict)  # slots handed out in this plan


def _candidates(snapshot: Snapshot, entry: Entry) -> list[NodeView]:
    model = entry.request.model
    return [n for n in snapshot.nodes
            if n.reliability is Reliability.RELIABLE and n.name not in entry.tried
            and n.unfit is None  # the polls found it unreachable or not Ollama
            and (model is None or n.models is None or model in n.models)
            and (model is None or model not in n.draining)]


def reachable(snapshot: Snapshot) -> list[str]:
    """The nodes whose loaded copies count as within reach: Reliable and fit."""
    return [n.name for n in snapshot.nodes
            if n.reliability is Reliability.RELIABLE and n.unfit is None]


def choose(snapshot: Snapshot, costs: dict[str, NodeCost], entry: Entry,
           taken: dict[str, int] | None = None, demand: Demand | None = None,
           ) -> Pick | Hold | Reject | Wait:
    """Where `entry` goes: Pick (a free node now), Hold (its best node is busy) or Reject.
    The reliability rules stay the peer's: only Reliable nodes are weighed; with none, the
    peer's rule (second chance in turn) decides."""
    taken = taken or {}
    base = decide(snapshot, entry.request, entry.tried, can_wait=True)
    if isinstance(base, Reject):
        return base
    views = _candidates(snapshot, entry)
    if not views:
        return base  # no Reliable node can serve: the peer's second chance, or wait
    loaded = copies(costs, reachable(snapshot)) if demand else {}
    ranked = []
    for v in views:
        cost = costs.get(v.name, NodeCost())
        e = estimate(v.name, cost, entry.job)
        penalty = eviction_cost(cost, entry.job, e, demand, loaded, entry.user) if demand else 0.0
        ranked.append((e.ttft + penalty, penalty, e, v, cost))
    if entry.request.task is not None:
        # an Open WebUI task waits for a node that holds its model rather than load it, and
        # takes a free one whose cached conversation is least likely to continue
        warm = [r for r in ranked if holds(r[4], r[3], entry.job.model)]
        _, _, est, view, _ = min(warm or ranked, key=lambda r: (
            r[2].start > 0, overwrite_rank(r[4], r[2]), r[0], r[3].order))
    else:
        lowest = min(r[0] for r in ranked)
        _, _, est, view, _ = min((r for r in ranked if r[0] <= lowest + TIE),
                                 key=lambda r: (r[2].load > 0, r[1] > 0, overwrite_rank(r[4], r[2]),
                                                r[0], r[3].order))
    free_now = view.in_flight + taken.get(view.name, 0) < view.max_concurrent
    if est.start <= 0 and free_now:
        why = "lowest estimate"
        if est.cached_tokens:
            why += ", continues its cached conversation"
        return Pick(view.name, f"{why} ({est.ttft:.1f} s to first token)")
    if isinstance(base, Pick) and base.second_chance:
        other = estimate(base.node, costs.get(base.node, NodeCost()), entry.job)
        if other.ttft <= est.ttft:
            return base
    return Hold(est)


def plan(snapshot: Snapshot, costs: dict[str, NodeCost], entries: list[Entry],
         demand: Demand | None = None, kept: Mapping[int, object] | None = None,
         ) -> dict[int, Pick | Hold | Reject | Wait]:
    """Decide every waiting entry, in the given (priority) order.
    `kept`: the previous plan's decisions. Once no slot is left free (every free one taken by
    the entries before), an entry that held for a node still usable keeps that Hold: only a
    free slot can let it start, so nothing that changed can alter it (its estimate ages until
    the next full plan). A change then costs (free slots x nodes), not (waiting x nodes)."""
    p = _Plan(dict(costs))
    out: dict[int, Pick | Hold | Reject | Wait] = {}
    free = sum(max(0, v.max_concurrent - v.in_flight) for v in snapshot.nodes)
    usable = {v.name for v in snapshot.nodes
              if v.reliability is Reliability.RELIABLE and v.unfit is None} if kept else set()
    for entry in entries:
        old = kept.get(entry.id) if kept else None
        if free <= 0 and isinstance(old, Hold) and old.estimate.node in usable:
            d: Pick | Hold | Reject | Wait = old
        else:
            d = choose(snapshot, p.costs, entry, p.taken, demand)
        out[entry.id] = d
        if isinstance(d, Pick):
            free -= entry.request.uses_slot
            p.taken[d.node] = p.taken.get(d.node, 0) + 1
            node_cost = p.costs.get(d.node, NodeCost())
            p.costs[d.node] = after(node_cost, entry.job,
                                    estimate(d.node, node_cost, entry.job))
        elif isinstance(d, Hold):
            node_cost = p.costs.get(d.estimate.node, NodeCost())
            p.costs[d.estimate.node] = after(node_cost, entry.job, d.estimate)
    return out
