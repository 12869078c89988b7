"""The node table itself (fleet.py): no sockets."""
from __future__ import annotations

import pytest

import balancer.fleet
from balancer import NodeSpec
from balancer.fleet import Fleet


def models(fleet: Fleet, name: str) -> frozenset[str] | None:
    return next(v.models for v in fleet.snapshot().nodes if v.name == name)


def test_static_model_list_is_normalised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet([NodeSpec("a", "http://127.0.0.1:1", models=["QWQ:32B", "library/codestral"])])
    calls: list[str] = []
    real = balancer.fleet.normalize_model
    monkeypatch.setattr(balancer.fleet, "normalize_model", lambda m: calls.append(m) or real(m))
    for _ in range(100):  # one snapshot per request
        assert models(fleet, "a") == {"qwq:32b", "codestral:latest"}
        fleet.states()
    assert calls == []


def test_a_changed_static_model_list_takes_effect() -> None:
    url = "http://127.0.0.1:1"
    fleet = Fleet([NodeSpec("a", url, models=["QWQ:32B"])])
    node = fleet.nodes["a"]
    fleet.replace([NodeSpec("a", url, models=["codestral"])])
    assert fleet.nodes["a"] is node  # same node, new spec
    assert models(fleet, "a") == {"codestral:latest"}
    fleet.update_poll(node, frozenset({"codestral:latest", "qwq:32b"}), None, None)
    assert models(fleet, "a") == {"codestral:latest"}  # the static list still restricts
    fleet.replace([NodeSpec("a", url)])
    assert models(fleet, "a") == {"codestral:latest", "qwq:32b"}  # now whatever it reports
