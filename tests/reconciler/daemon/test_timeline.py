"""The history behind the status page's charts: per-interval percentiles from the requests of
that interval, and a memory bound however long the daemon runs and however busy it is."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc

from reconciler.daemon.timeline import MAX_KEYS, MAX_OBSERVATIONS, RECENT, Timeline

START = 1_767_225_600.0   # a minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def test_each_interval_has_its_own_percentiles_not_the_cumulative_ones() -> None:
    clock = Clock()
    tl = Timeline(clock)
    for v in range(1, 11):                      # first minute: 1..10 s
        tl.event("first_token", "qwq:32b", float(v))
    clock.now += 60
    tl.event("first_token", "qwq:32b", 0.2)     # second minute: one fast answer
    tl.event("load", "qwq:32b", 1.0)
    clock.now += 60
    first, second = tl.to_json()["hour"]["points"]
    assert first["ttft"]["qwq:32b"] == {"p50": 5.0, "p90": 9.0, "n": 10}
    # cumulative buckets would still say p50 around 5 s here
    assert second["ttft"]["qwq:32b"] == {"p50": 0.2, "p90": 0.2, "n": 1}
    assert (first["loads"], second["loads"]) == ({}, {"qwq:32b": 1})
    assert tl.to_json()["last_hour"]["qwq:32b"]["n"] == 11


def test_a_node_down_is_recorded_in_the_intervals_it_was_down() -> None:
    clock = Clock()
    tl = Timeline(clock)
    for minute in range(6):
        tl.sample({"qwq:32b": minute}, [("gpu-1", True), ("gpu-2", not 2 <= minute <= 3)])
        clock.now += 60
    points = tl.to_json()["hour"]["points"]
    assert [p["down"] for p in points] == [[], [], ["gpu-2"], ["gpu-2"], [], []]
    assert [p["queue"].get("qwq:32b", 0) for p in points] == [0, 1, 2, 3, 4, 5]
    assert all(p["nodes"] == ["gpu-1", "gpu-2"] for p in points)


def _busy_day(tl: Timeline, clock: Clock, models: int) -> None:
    """A request every five seconds (some minutes twenty times more), over many models, nodes
    going up and down."""
    for s in range(0, 86400, 5):
        clock.now += 5
        burst = 40 if s % 3600 < 60 else 1
        for i in range(burst):
            tl.event("first_token", f"model-{(s + i) % models}:7b", (s % 97) / 10)
        if s % 600 == 0:
            tl.event("load", f"model-{s % models}:7b", 1.0)
        if s % 10 == 0:
            tl.sample({f"model-{s % models}:7b": s % 4}, [(f"gpu-{n}", (s // 900 + n) % 4 != 0) for n in range(6)])


def test_the_history_stays_bounded_over_a_simulated_day() -> None:
    clock = Clock()
    models = MAX_KEYS + 20          # more models than a point keeps
    gc.collect()
    tracemalloc.start()
    try:
        tl = Timeline(clock)
        _busy_day(tl, clock, models)
        size_one = len(json.dumps(tl.to_json()))
        gc.collect()
        memory_one = tracemalloc.get_traced_memory()[0]
        _busy_day(tl, clock, models)     # a second day: nothing grows any more
        day_two = tl.to_json()
        size_two = len(json.dumps(day_two))
        gc.collect()
        memory_two = tracemalloc.get_traced_memory()[0] - sys.getsizeof(day_two)
    finally:
        tracemalloc.stop()
    assert len(day_two["hour"]["points"]) == 60 and len(day_two["day"]["points"]) == 144
    assert day_two["day"]["points"][-1]["t"] - day_two["day"]["points"][0]["t"] == 143 * 600
    assert all(len(p["ttft"]) <= MAX_KEYS and len(p["queue"]) <= MAX_KEYS for p in day_two["day"]["points"])
    kept = sum(len(v) for v in tl.hour.open.ttft.values()) if tl.hour.open else 0
    assert kept <= MAX_KEYS * MAX_OBSERVATIONS
    assert sum(len(t) for t, _ in tl.recent.values()) <= MAX_KEYS * RECENT
    # what the history holds, with more models than anyone declares: a few MB at most, the same
    # after the second day as after the first
    assert memory_two < 4 * 2**20, memory_two
    assert memory_two < 1.25 * memory_one, (memory_one, memory_two)
    assert size_two < 1.25 * size_one < 2_000_000, (size_one, size_two)


def test_sampled_percentiles_stay_fair_beyond_the_kept_observations() -> None:
    clock = Clock()
    tl = Timeline(clock)
    for i in range(10 * MAX_OBSERVATIONS):     # 0.000 .. 0.999 s, evenly, more than are kept
        tl.event("first_token", "llama3.2:1b", (i % 1000) / 1000)
    clock.now += 60
    [point] = tl.to_json()["hour"]["points"]
    assert point["ttft"]["llama3.2:1b"]["n"] == 10 * MAX_OBSERVATIONS
    # the last hour's summary counts every request, though its percentiles use the latest RECENT
    assert tl.to_json()["last_hour"]["llama3.2:1b"]["n"] == 10 * MAX_OBSERVATIONS > RECENT
    assert abs(point["ttft"]["llama3.2:1b"]["p50"] - 0.5) < 0.05
    assert abs(point["ttft"]["llama3.2:1b"]["p90"] - 0.9) < 0.05
