"""What the balancer knows of each node's GPU, for the cost model (cost.py).

What it sent is knowledge before the next poll: the model and num_ctx a node last ran,
the conversation its slot caches, and when each running request should end. Rates are
learned per node and model from Ollama's final chunk: load_duration, eval_count/duration,
and prefill from prompt_eval_duration over our own estimate of the uncached part (Ollama's
prompt_eval_count is the whole prompt even on a cache hit). The first sample replaces the
defaults; later ones weigh ALPHA each, so a changed GPU shows after a few requests. Each
sample also feeds the rates of the node's tier (capability, speed) for that model, which a
node that never ran the model uses before the defaults.

Demand: the model each user last asked for, and when; a user counts for that model while
they asked within DEMAND seconds (what an eviction would cost them, cost.py; what the warmer
reloads, warm.py).

`scale` converts Ollama's reported seconds to the balancer's clock: 1 in production; a
benchmark that runs simulated nodes faster than real time sets it to their time_scale.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from .cost import DEFAULT_RATES, Demand, Estimate, Job, NodeCost, Rates
from .conversation import Conversation

ALPHA = 0.3
DEMAND = 60.0  # seconds: a user who asked this recently still uses their model

NS = 1e9
MIN_LEARN_TOKENS = 64  # fewer uncached tokens say more about overhead than about the rate
MIN_LOAD = 0.5  # seconds: a shorter load_duration is a runner that was already loaded (unless
# the node held nothing: then it is what a load takes there)


@dataclass
class Running:
    node: str
    job: Job
    estimate: Estimate
    ends_at: float  # on the cost clock
    arrived: float  # time.monotonic() when the request reached the balancer
    first_at: float | None = None  # on the cost clock, when its first byte came
    cold: bool = False  # sent to a node believed to hold no model: its load_duration is a load


@dataclass
class NodeKnowledge:
    model: str | None = None
    num_ctx: int | None = None
    cached: Conversation | None = None
    cached_tokens: int = 0
    cached_at: float = 0.0  # on the cost clock, when that conversation last ran
    rates: dict[str, Rates] = field(default_factory=dict)
    also_loaded: frozenset[str] = frozenset()  # what the last poll listed besides `model`
    running: dict[int, Running] = field(default_factory=dict)
    tier: tuple[int, int] = (0, 0)  # (capability, speed)


def _mix(old: float, sample: float) -> float:
    return old + ALPHA * (sample - old)


class Knowledge:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.nodes: dict[str, NodeKnowledge] = {}
        self.queued: dict[str, int] = {}  # requests waiting in the balancer, by their best node
        # Hand a request whose best node is busy but has its model loaded to that node at
        # once (Ollama queues it behind its slot) instead of holding it in the balancer.
        # Off: holding keeps the choice open (scripts/bench_schedule.py measures both).
        self.hand_off = False
        self.tiers: dict[tuple[int, int], dict[str, Rates]] = {}  # learned per tier and model
        self.asked: dict[str, tuple[str, float]] = {}  # user -> (model, cost clock)
        self._demand: tuple[float, Demand] = (-1.0, {})

    # -- demand --------------------------------------------------------------------
    def saw(self, user: str, model: str | None) -> None:
        """`user` asked for `model`: their demand moves to it."""
        if model is not None:
            self.asked[user] = (model, self.now())
            self._demand = (-1.0, {})

    def demand(self) -> Demand:
        """model -> the users who asked for it within DEMAND seconds (computed at most once
        per second of the cost clock, or after a new request)."""
        now = self.now()
        at, cached = self._demand
        if at >= 0 and now - at < 1.0:
            return cached
        out: dict[str, set[str]] = {}
        for user, (model, when) in list(self.asked.items()):
            if now - when > DEMAND:
                del self.asked[user]
            else:
                out.setdefault(model, set()).add(user)
        demand = {m: frozenset(u) for m, u in out.items()}
        self._demand = (now, demand)
        return demand

    def now(self) -> float:
        """The cost clock: seconds as Ollama reports them."""
        return time.monotonic() / self.scale

    def node(self, name: str) -> NodeKnowledge:
        k = self.nodes.get(name)
        if k is None:
            k = self.nodes[name] = NodeKnowledge()
        return k

    def cost(self, name: str, slots: int, loaded: frozenset[str], now: float,
             tier: tuple[int, int] | None = None) -> NodeCost:
        k = self.node(name)
        if tier is not None:
            k.tier = tier
        ends = sorted(max(r.ends_at - now, 0.05 * r.estimate.busy_for + 0.1)
                      for r in k.running.values())
        slots = max(1, slots)
        # more running than slots (Ollama queues them): the last ones hold the slots longest
        free = [0.0] * (slots - len(ends)) + ends if len(ends) < slots else ends[-slots:]
        model, ctx = k.model, k.num_ctx
        if model is None and loaded:
            model = min(loaded)  # polled, never sent: assume the default num_ctx
        return NodeCost(tuple(free), model, ctx, k.cached, k.cached_tokens,
                        tuple(k.rates.items()), k.also_loaded - {model or ""},
                        0.0 if k.running else max(0.0, now - k.cached_at),
                        self.tiers.get(k.tier, {}))

    def costs(self, views: Any) -> dict[str, NodeCost]:
        now = self.now()
        return {v.name: self.cost(v.name, v.max_concurrent, v.loaded, now,
                                  (v.capability, v.speed)) for v in views}

    def facts(self, name: str) -> dict[str, Any]:
        """NodeState fields: what the balancer knows of the node's GPU."""
        k = self.node(name)
        learned = {m: {"load_s": round(r.load, 2), "prompt_tokens_per_s": round(r.prefill),
                       "tokens_per_s": round(r.gen, 1), "answer_tokens": round(r.answer)}
                   for m, r in sorted(k.rates.items())}
        return {"runner_model": k.model, "runner_num_ctx": k.num_ctx, "learned": learned,
                "queued": self.queued.get(name, 0)}

    def first_byte_allowance(self, key: int, name: str) -> float:
        """Seconds of expected silence before this request's first byte (a load, a wait in
        Ollama's queue): the silence timeout must not count them against the node."""
        run = self.node(name).running.get(key)
        return 0.0 if run is None else run.estimate.ttft * self.scale

    # -- events --------------------------------------------------------------------
    def polled(self, name: str, loaded: frozenset[str]) -> None:
        """A poll listed the loaded models: a runner we believed in is gone when unlisted."""
        k = self.node(name)
        k.also_loaded = loaded
        if k.model is not None and k.model not in loaded and not k.running:
            k.model = k.num_ctx = None
            k.cached, k.cached_tokens = None, 0

    def started(self, key: int, name: str, job: Job, est: Estimate, arrived: float) -> None:
        k = self.node(name)
        cold = k.model is None and not k.also_loaded
        if job.model is not None:
            if job.model != k.model:  # a load evicts (assumed); loaded beside, the last stays
                kept = frozenset() if k.model is None else frozenset({k.model})
                k.also_loaded = frozenset() if est.load > 0 else k.also_loaded | kept
            k.model, k.num_ctx = job.model, job.num_ctx
        rates = k.rates.get(job.model or "", DEFAULT_RATES)
        k.cached, k.cached_tokens = job.conversation, job.tokens + int(rates.answer)
        k.cached_at = self.now()
        k.running[key] = Running(name, job, est, self.now() + est.busy_for, arrived,
                                 cold=cold and est.load > 0)

    def first_byte(self, key: int, name: str) -> float | None:
        """The first token came: what is left is generation. Returns the seconds since
        the request arrived (None when it is not tracked)."""
        run = self.node(name).running.get(key)
        if run is None:
            return None
        r = self.node(name).rates.get(run.job.model or "", DEFAULT_RATES)
        run.first_at = self.now()
        run.ends_at = run.first_at + (r.answer / r.gen if r.gen > 0 else 0.0)
        return time.monotonic() - run.arrived

    def ended(self, key: int, name: str, final: dict[str, Any] | None) -> None:
        k = self.node(name)
        run = k.running.pop(key, None)
        if run is not None and k.cached is run.job.conversation:
            k.cached_at = self.now()
        if run is None or final is None or run.job.model is None:
            return
        model = run.job.model
        samples: dict[str, float] = {}
        load = _seconds(final.get("load_duration"))
        if load is None and run.cold and "total_duration" in final:
            load = 0.0  # Ollama omits zero durations (Go omitempty): a load that took no time
        if load is not None and (load >= MIN_LOAD or run.cold):
            samples["load"] = load
        prefill = _seconds(final.get("prompt_eval_duration"))
        if prefill and run.estimate.uncached_tokens >= MIN_LEARN_TOKENS:
            samples["prefill"] = run.estimate.uncached_tokens / prefill
        count, gen = final.get("eval_count"), _seconds(final.get("eval_duration"))
        if gen is None and run.first_at is not None and isinstance(count, int) and count > 1 \
                and final.get("streamed", True):
            gen = self.now() - run.first_at  # /v1, Anthropic: no durations, our own clock
        if isinstance(count, int) and count > 0:
            samples["answer"] = count
            if gen:
                samples["gen"] = count / gen
            if k.cached is run.job.conversation:
                k.cached_tokens = run.job.tokens + count
        _learn(k.rates, model, samples)
        if samples:
            _learn(self.tiers.setdefault(k.tier, {}), model, samples)


def _learn(rates: dict[str, Rates], model: str, samples: dict[str, float]) -> None:
    """Mix samples into `rates[model]`: a first sample replaces the defaults outright."""
    r = rates.get(model)
    if r is None:
        rates[model] = replace(DEFAULT_RATES, **samples) if samples else DEFAULT_RATES
    elif samples:  # one replace(): this runs for every request
        rates[model] = replace(r, **{f: _mix(getattr(r, f), v) for f, v in samples.items()})


def _seconds(ns: Any) -> float | None:
    return ns / NS if isinstance(ns, (int, float)) and not isinstance(ns, bool) and ns >= 0 \
        else None
