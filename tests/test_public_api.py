"""The names users import from `reconciler` and `simulator` are pinned (balancer's: tests/balancer)."""
from __future__ import annotations

import pytest

import reconciler
import simulator
from reconciler import ConfigError, OllafleetError, PermanentError, TargetError, TemporaryError


def test_reconciler_exported_names() -> None:
    assert sorted(reconciler.__all__) == sorted([
        "Action", "Change", "ChangeResult", "ConfigError", "DesiredState", "OllafleetError",
        "PassReport", "PermanentError", "Plan", "Problem", "Status", "TargetError", "TemporaryError",
        "load", "load_text"])
    for name in reconciler.__all__:
        assert hasattr(reconciler, name), name


def test_simulator_exported_names() -> None:
    assert sorted(simulator.__all__) == sorted([
        "CATALOGUE", "Catalogue", "CatalogueModel", "Fault", "RecordedRequest", "SimNode",
        "Simulator", "SimulatorThread", "Timing", "build_catalogue"])
    for name in simulator.__all__:
        assert hasattr(simulator, name), name


def test_errors_form_one_tree_catchable_at_the_root() -> None:
    for cls in (ConfigError, TargetError, TemporaryError, PermanentError):
        assert issubclass(cls, OllafleetError)
    assert issubclass(TemporaryError, TargetError) and issubclass(PermanentError, TargetError)


def test_load_text_through_the_public_names() -> None:
    state = reconciler.load_text('version = 1\n[[nodes]]\nname = "gpu-1"\nurl = "http://127.0.0.1:1/"\n',
                                 env={})
    assert isinstance(state, reconciler.DesiredState)
    assert [(n.name, n.url) for n in state.nodes] == [("gpu-1", "http://127.0.0.1:1")]
    with pytest.raises(reconciler.ConfigError) as info:
        reconciler.load_text("version = 2\n", env={})
    assert info.value.problems and all(isinstance(p, reconciler.Problem) for p in info.value.problems)
