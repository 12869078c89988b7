"""The warmer: model loads ahead of demand, only on idle nodes.

One primitive, `Warmer.load`: an /api/generate with no prompt, on which Ollama loads the
model with the given options (the declared num_ctx, ...) and keep_alive, and answers once
it is loaded. Two policies, decided by `plan_loads` (pure) on every change of the fleet:

- orphan reload (queueing mode): a model in recent demand with no loaded copy on any node
  within reach (its node died, failed, was drained, or a poll found it gone) is loaded on an
  node idle for ORPHAN_IDLE s that has it and holds no protected copy, without waiting for
  the next request;
- pins: a node's `pinned` models (`keep_loaded` in the file) are loaded there with
  keep_alive -1 once the node has been idle PIN_IDLE s, unless that evicts a protected copy.
  Traffic may evict a pinned model meanwhile: that is no fault; it comes back when idle.

A protected copy is the last loaded copy (within reach) of a model in recent demand.
Never onto a node that serves, has requests queued for it, or is loading already. In
queueing mode a load holds the node's slot, so requests see it busy (and one for the model
being loaded waits for it rather than loading it elsewhere). Loads are bounded
(LOAD_TIMEOUT), logged, counted (metric warmer_loads) and shown per node (`warming`).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from .config import Settings
from .cost import Job, estimate
from .fleet import Fleet, Node
from .params import LOAD_TIME
from .scheduling import Reliability

log = logging.getLogger("balancer")

PIN_IDLE = 5.0  # seconds (as nodes report them) a node is idle before a pin is loaded
ORPHAN_IDLE = 1.0  # ... before an orphan is (the node's own last answer has surely ended)
GAP = 0.25  # seconds between two looks at the fleet, at least
LOOK = 2.0  # ... and at most (idle time passes without a change)
LOAD_TIMEOUT = 300.0  # seconds a load may take before it is given up


@dataclass(frozen=True)
class Seen:
    """One node as the warmer sees it."""
    name: str
    order: int
    idle_for: float | None  # seconds since it last ran anything; None: busy, queued or loading
    models: frozenset[str] | None  # on its disk (None: not known yet)
    holds: frozenset[str]  # loaded on its GPU
    pinned: tuple[str, ...] = ()
    within_reach: bool = True  # Reliable and fit: its copies count, it may load


@dataclass(frozen=True)
class Load:
    node: str
    model: str
    pin: bool
    why: str


def plan_loads(nodes: list[Seen], demand: Mapping[str, int], pin_idle: float = PIN_IDLE,
               orphans: bool = True) -> list[Load]:
    """The loads to start now; `demand` is model -> recent users. At most one per node."""
    live = [n for n in nodes if n.within_reach]
    copies = Counter(m for n in live for m in n.holds)

    def protected(n: Seen) -> bool:
        return any(demand.get(m, 0) > 0 and copies[m] <= 1 for m in n.holds)

    free = [n for n in live if n.idle_for is not None]
    used: set[str] = set()
    out: list[Load] = []
    for model in sorted(demand, key=lambda m: (-demand[m], m)) if orphans else ():
        if copies[model] > 0 or demand[model] <= 0:
            continue
        fits = [n for n in free if n.name not in used and n.models is not None
                and model in n.models and not protected(n) and (n.idle_for or 0.0) >= ORPHAN_IDLE]
        if not fits:
            continue
        # rather a node that holds nothing anyone uses now; then the longest idle
        best = min(fits, key=lambda n: (any(demand.get(m, 0) for m in n.holds),
                                        -(n.idle_for or 0.0), n.order))
        out.append(Load(best.name, model, False,
                        f"{demand[model]} recent user(s), no loaded copy left"))
        used.add(best.name)
        copies.subtract(best.holds)
        copies[model] += 1
    for n in free:
        if n.name in used or (n.idle_for or 0.0) < pin_idle or not n.pinned:
            continue
        if any(p in n.holds for p in n.pinned):
            continue  # one of its pins is resident: a second might evict it
        there = [p for p in n.pinned if n.models is not None and p in n.models]
        if there and not protected(n):
            out.append(Load(n.name, there[0], True, "pinned (keep_loaded), node idle"))
            used.add(n.name)
    return out


class Warmer:
    def __init__(self, fleet: Fleet, session: aiohttp.ClientSession,
                 settings: Callable[[], Settings]) -> None:
        self.fleet = fleet
        self.session = session
        self.settings = settings
        self.pin_idle = PIN_IDLE
        self.loading: dict[str, asyncio.Task[None]] = {}
        self.embedding: set[str] = set()  # models that load through /api/embed
        self.stopped = False
        self._keys = itertools.count(-1, -1)  # knowledge keys that no request's id() takes

    def seen(self) -> list[Seen]:
        k = self.fleet.knowledge
        now = k.now()
        out = []
        for n in self.fleet.nodes.values():
            nk = k.node(n.name)
            busy = (n.in_flight + n.remote > 0 or nk.running or k.queued.get(n.name, 0) > 0
                    or n.name in self.loading)
            cost = k.cost(n.name, n.spec.max_concurrent, n.loaded, now)
            drained = frozenset(n.draining)  # being rebuilt or deleted there: hands off
            models = None if n.models is None else n.models - drained
            out.append(Seen(n.name, n.order, None if busy else max(0.0, now - nk.cached_at),
                            models, cost.holds() - drained, n.spec.pinned,
                            n.reliability is Reliability.RELIABLE and n.unfit is None))
        return out

    def step(self) -> list[Load]:
        """Look once and start what plan_loads says."""
        demand = {m: len(u) for m, u in self.fleet.knowledge.demand().items()}
        if not demand and not any(n.spec.pinned for n in self.fleet.nodes.values()):
            return []
        loads = plan_loads(self.seen(), demand, self.pin_idle,
                           orphans=self.settings().queue_timeout > 0)
        slot = self.settings().queue_timeout > 0
        for load in loads:
            key = self.begin(load)
            self.loading[load.node] = asyncio.create_task(self.load(load, key, slot),
                                                          name=f"warm {load.node}")
        return loads

    async def run(self) -> None:
        # a flag as well as the cancel: a cancel that lands as the fleet changes can be lost
        # in wait_for (Python 3.11)
        while not self.stopped:
            scale = self.fleet.knowledge.scale
            await self.fleet.wait_changed(LOOK * scale)
            if self.stopped:
                return
            try:
                self.step()
            except Exception:  # the warmer must never stop
                log.exception("warmer: look failed")
            await asyncio.sleep(GAP * scale)

    def body(self, model: str, pin: bool) -> dict[str, Any]:
        """An /api/generate that only loads: the declared load-time options and keep_alive."""
        declared = self.settings().model_params.get(model)
        body: dict[str, Any] = {"model": model, "stream": False}
        options = {k: v for k, v in (declared.options if declared else {}).items()
                   if k in LOAD_TIME}
        if options:
            body["options"] = options
        if pin or (declared is not None and declared.keep_loaded):
            body["keep_alive"] = -1
        elif declared is not None and declared.keep_alive is not None:
            body["keep_alive"] = declared.keep_alive
        return body

    def begin(self, load: Load) -> int:
        """The node is taken before any await: no request is sent there meanwhile."""
        node = self.fleet.nodes[load.node]
        k = self.fleet.knowledge
        body = self.body(load.model, load.pin)
        ctx = body.get("options", {}).get("num_ctx")
        job = Job(load.model, ctx if isinstance(ctx, int) else None)
        key = next(self._keys)
        cost = k.cost(node.name, node.spec.max_concurrent, node.loaded, k.now())
        est = estimate(node.name, cost, job)
        k.started(key, node.name, job, replace(est, busy_for=est.ttft), time.monotonic())
        if self.settings().queue_timeout > 0:
            node.in_flight += 1
        self.fleet.warming[node.name] = load.model
        self.fleet.metrics.warmer_loads += 1
        log.info("warmer: loading %s on %s (%s)", load.model, node.name, load.why)
        self.fleet.notify()  # waiting requests re-plan: this node is taken
        return key

    async def load(self, load: Load, key: int, slot: bool) -> None:
        node = self.fleet.nodes[load.node]
        k = self.fleet.knowledge
        body = self.body(load.model, load.pin)
        final: dict[str, Any] | None = None
        since = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=LOAD_TIMEOUT * k.scale,
                                            sock_connect=self.settings().connect_timeout)
            status, answer = await self._post(node, load.model, body, timeout)
            if status == 200:
                took = (time.monotonic() - since) / k.scale
                final = {"load_duration": int(took * 1e9)}  # no metrics in a load's answer
                log.info("warmer: %s loaded on %s in %.1f s", load.model, node.name, took)
            else:
                log.warning("warmer: loading %s on %s: HTTP %s %s", load.model, node.name,
                            status, answer[:200].decode(errors="replace"))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("warmer: loading %s on %s failed: %s", load.model, node.name,
                        str(exc) or type(exc).__name__)
        finally:
            k.ended(key, node.name, final)
            if final is None:
                k.polled(node.name, node.loaded)  # what it holds is not known: the polls say
            if slot:
                node.in_flight -= 1
            self.fleet.warming.pop(node.name, None)
            self.loading.pop(node.name, None)
            self.fleet.notify()

    async def _post(self, node: Node, model: str, body: dict[str, Any],
                    timeout: aiohttp.ClientTimeout) -> tuple[int, bytes]:
        """The load call: /api/generate with no prompt, or for an embedding model (Ollama
        answers 400 "does not support generate") /api/embed with no input."""
        if model not in self.embedding:
            async with self.session.post(node.spec.base_url + "/api/generate", json=body,
                                         timeout=timeout) as resp:
                answer = await resp.read()
            if resp.status != 400 or b"does not support generate" not in answer:
                return resp.status, answer
            self.embedding.add(model)
        embed = {k: v for k, v in body.items() if k != "stream"}
        async with self.session.post(node.spec.base_url + "/api/embed", json=embed,
                                     timeout=timeout) as resp:
            return resp.status, await resp.read()

    async def stop(self) -> None:
        self.stopped = True
        self.fleet.notify()  # wakes run() to see the flag
        tasks = list(self.loading.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
