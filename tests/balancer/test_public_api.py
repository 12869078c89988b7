"""The names the daemon and users import are pinned."""
from __future__ import annotations

import dataclasses

import pytest

import balancer
from balancer import Balancer, NodeSpec, Settings
from balancer.fleetwide import openai_models, parse_time, union


def test_exported_names() -> None:
    assert sorted(balancer.__all__) == sorted([
        "Balancer", "Decision", "Metrics", "NodeSpec", "NodeState", "NodeView", "Pick", "Reject",
        "Reliability", "RequestInfo", "Settings", "Snapshot", "Wait", "classify", "decide"])
    for name in balancer.__all__:
        assert hasattr(balancer, name)


def test_settings_are_frozen_with_drop_in_defaults() -> None:
    s = Settings()
    assert (s.connect_timeout, s.queue_timeout, s.refuse_management) == (1.0, 0.0, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.queue_timeout = 5.0  # type: ignore[misc]


def test_states_before_start() -> None:
    b = Balancer(Settings(), [NodeSpec("gpu-1", "http://127.0.0.1:9", max_concurrent=2)])
    [st] = b.states()
    assert (st.name, st.reliability, st.in_flight, st.max_concurrent, st.models, st.reachable) == (
        "gpu-1", "Reliable", 0, 2, None, None)
    assert b.metrics.as_dict()["requests_total"] == 0
    with pytest.raises(ValueError):
        b.replace_nodes([NodeSpec("a", "http://x:1"), NodeSpec("a", "http://y:1")])


def test_union_keeps_the_newest_entry_and_ignores_junk() -> None:
    a = {"models": [{"name": "m:1", "modified_at": "2026-01-02T01:00:46.891738203+02:00", "n": 1},
                    {"name": "old:1", "modified_at": "2025-01-01T00:00:00Z"}, "junk", {"x": 1}]}
    b = {"models": [{"name": "m:1", "modified_at": "2026-01-03T00:00:00.5Z", "n": 2}]}
    merged = union([a, b, None, {"models": None}, "bad"], "modified_at")
    assert [(m["name"], m.get("n")) for m in merged] == [("m:1", 2), ("old:1", None)]
    assert parse_time("garbage").year == 1970 and parse_time(12).year == 1970
    assert openai_models([]) == {"object": "list", "data": None}
    assert openai_models([{"name": "me/x:1", "modified_at": "2026-01-03T00:00:00Z"}])["data"][0][
        "owned_by"] == "me"
