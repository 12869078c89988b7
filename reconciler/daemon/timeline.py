"""What the status page draws over time: a small history the daemon keeps in memory.

Two series of points: one a minute for the last hour, one every ten minutes for the last day
(a fixed number of points each, so memory stays bounded; emptied by a restart). A point holds,
per model, the time to first token of the requests in that interval (p50, p90 and how many,
computed from those requests' own observations, not from cumulative buckets), the longest
queue seen, the model loads the balancer caused, and the nodes found down at a sample.

The balancer reports each first token and load as it happens (Metrics listeners); the daemon
samples the queue and the node states every few seconds. The clock is injectable, so tests
can play an hour or a day in seconds.
"""

from __future__ import annotations

import math
from array import array
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_OBSERVATIONS = 1000   # kept per model and open interval (a fair sample beyond)
MAX_KEYS = 40             # models (or nodes) per point: more are not drawn anyway
RECENT = 1000             # the latest first tokens kept per model for the last hour's percentiles


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class _Open:
    """The interval being filled."""
    start: float
    ttft: dict[str, array[float]] = field(default_factory=dict)   # 8 bytes a value
    seen: dict[str, int] = field(default_factory=dict)      # observations per model (all, not only kept)
    queue: dict[str, int] = field(default_factory=dict)     # the longest queue per model
    loads: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    samples: int = 0

    def point(self) -> dict[str, Any]:
        ttft = {m: {"p50": round(percentile(v, 0.5), 3), "p90": round(percentile(v, 0.9), 3), "n": self.seen[m]}
                for m, v in sorted(self.ttft.items())}
        return {"t": self.start, "ttft": ttft, "queue": dict(sorted(self.queue.items())),
                "loads": dict(sorted(self.loads.items())), "down": sorted(self.down),
                "nodes": sorted(self.nodes), "sampled": self.samples > 0}


class Series:
    """Points `step` seconds apart, the last `keep` of them."""

    def __init__(self, step: float, keep: int) -> None:
        self.step, self.keep = step, keep
        self.points: deque[dict[str, Any]] = deque(maxlen=keep)
        self.open: _Open | None = None

    def at(self, now: float) -> _Open:
        start = math.floor(now / self.step) * self.step
        if self.open is not None and self.open.start != start:
            if start > self.open.start:
                self.points.append(self.open.point())
            else:
                return self.open   # the clock went back: keep filling the open interval
            self.open = None
        if self.open is None:
            self.open = _Open(start)
        return self.open

    def to_json(self, now: float) -> dict[str, Any]:
        self.at(now)
        return {"step": self.step, "points": list(self.points),
                "current": self.open.point() if self.open else None}


def _bounded(d: Mapping[str, Any], key: str) -> bool:
    return key in d or len(d) < MAX_KEYS


class Timeline:
    def __init__(self, clock: Callable[[], float] = time.time, *, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.hour = Series(60.0, 60)
        self.day = Series(600.0, 144)
        self.rng = rng or random.Random(0)
        # model -> (times, seconds) of its latest first tokens within the last hour
        self.recent: dict[str, tuple[deque[float], deque[float]]] = {}

    def _opens(self) -> list[_Open]:
        now = self.clock()
        return [self.hour.at(now), self.day.at(now)]

    # -- what the balancer reports as it happens --------------------------------------
    def event(self, what: str, model: str | None, value: float) -> None:
        """A Metrics listener: ("first_token", model, seconds) or ("load", model, 1)."""
        name = model or "-"
        if what == "first_token" and _bounded(self.recent, name):
            times, values = self.recent.setdefault(name, (deque(maxlen=RECENT), deque(maxlen=RECENT)))
            now = self.clock()
            times.append(now)
            values.append(value)
            self._forget(times, values, now)
        for o in self._opens():
            if what == "first_token" and _bounded(o.ttft, name):
                kept = o.ttft.setdefault(name, array("d"))
                o.seen[name] = o.seen.get(name, 0) + 1
                if len(kept) < MAX_OBSERVATIONS:
                    kept.append(value)
                else:   # reservoir sampling: every observation has the same chance to be kept
                    i = self.rng.randrange(o.seen[name])
                    if i < MAX_OBSERVATIONS:
                        kept[i] = value
            elif what == "load" and _bounded(o.loads, name):
                o.loads[name] = o.loads.get(name, 0) + 1

    # -- what the daemon samples every few seconds ------------------------------------
    def sample(self, queued: Mapping[str, int], nodes: Iterable[tuple[str, bool]]) -> None:
        """`queued`: requests waiting per model now; `nodes`: (name, up) of each node."""
        nodes = list(nodes)
        for o in self._opens():
            o.samples += 1
            for model, n in queued.items():
                if n > o.queue.get(model, 0) and _bounded(o.queue, model):
                    o.queue[model] = n
            for name, up in nodes[:MAX_KEYS]:
                o.nodes.add(name)
                if not up:
                    o.down.add(name)

    def last_hour(self, now: float) -> dict[str, dict[str, float]]:
        """Per model, the time to first token over the last hour (percentiles of its latest RECENT
        requests) and how many requests that hour had."""
        out = {}
        for model, (times, values) in list(self.recent.items()):
            self._forget(times, values, now)
            if not times:
                del self.recent[model]
                continue
            out[model] = {"p50": round(percentile(values, 0.5), 3), "p90": round(percentile(values, 0.9), 3),
                          "n": self._count(model, now)}
        return dict(sorted(out.items()))

    def _count(self, model: str, now: float) -> int:
        """First tokens of the last hour, all of them (the percentiles use the latest RECENT)."""
        closed: int = sum(p["ttft"][model]["n"] for p in self.hour.points
                     if p["t"] >= now - 3600 and model in p["ttft"])
        return closed + (self.hour.open.seen.get(model, 0) if self.hour.open else 0)

    @staticmethod
    def _forget(times: deque[float], values: deque[float], now: float) -> None:
        while times and times[0] < now - 3600:
            times.popleft()
            values.popleft()

    def to_json(self) -> dict[str, Any]:
        now = self.clock()
        return {"now": now, "hour": self.hour.to_json(now), "day": self.day.to_json(now),
                "last_hour": self.last_hour(now)}
