"""A tiny cumulative histogram (Prometheus-style buckets) for /status and /metrics."""
from __future__ import annotations

from dataclasses import dataclass, field

SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class Histogram:
    bounds: tuple[float, ...] = SECONDS
    counts: list[int] = field(default_factory=lambda: [0] * (len(SECONDS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, "+Inf" last."""
        out, total = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts):
            total += n
            out.append((bound, total))
        return out

    def as_dict(self) -> dict[str, object]:
        return {"buckets": dict(self.buckets()), "sum": self.sum, "count": self.count}
