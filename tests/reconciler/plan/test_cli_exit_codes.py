"""`ollafleet plan` / `apply` exit codes and output, with stand-in targets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from reconciler import cli
from tests.reconciler.plan.test_engine import FakeTarget


@pytest.fixture
def file(tmp_path: Path) -> str:
    path = tmp_path / "desired_state.toml"
    path.write_text("version = 1\n")
    return str(path)


def args(file: str, **kw: object) -> argparse.Namespace:
    return argparse.Namespace(file=file, json=kw.get("json", False), detailed_exitcode=kw.get("detailed", False))


def test_plan_exit_codes(file: str, capsys: pytest.CaptureFixture[str]) -> None:
    t = FakeTarget("a", {}, {"m": 1})
    assert cli.cmd_plan(args(file, detailed=True), factory=lambda s: [t]) == 2
    assert cli.cmd_plan(args(file), factory=lambda s: [t]) == 0
    assert "Plan: 1 to create" in capsys.readouterr().out
    done = FakeTarget("a", {"m": 1}, {"m": 1})
    assert cli.cmd_plan(args(file, detailed=True), factory=lambda s: [done]) == 0
    down = FakeTarget("a", {}, {"m": 1}, unreachable=True)
    assert cli.cmd_plan(args(file, detailed=True), factory=lambda s: [down]) == 1


def test_apply_json_then_converged(file: str, capsys: pytest.CaptureFixture[str]) -> None:
    t = FakeTarget("a", {}, {"m": 1})
    assert cli.cmd_apply(args(file, json=True), factory=lambda s: [t]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changes"] == [{"target": "a", "action": "create", "path": "m", "before": None, "after": 1,
                               "status": "applied", "message": ""}]
    assert cli.cmd_apply(args(file), factory=lambda s: [t]) == 0
    assert "No changes" in capsys.readouterr().out


def test_apply_failure_exits_1_and_names_it(file: str, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.errors import TemporaryError
    t = FakeTarget("ollama/gpu-2", {}, {"m": 1}, fail_on={"m": TemporaryError("no space left on device")})
    assert cli.cmd_apply(args(file), factory=lambda s: [t]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "ollama/gpu-2" in out and "no space left on device" in out


def test_bad_file_exits_1_before_contacting_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "desired_state.toml"
    bad.write_text("version = 1\n[balancr]\n")
    called = []
    assert cli.cmd_apply(args(str(bad)), factory=lambda s: called.append(1) or []) == 1
    assert called == []
    assert 'balancr: unknown key (did you mean "balancer"?)' in capsys.readouterr().err


def test_plan_with_an_unreadable_target_does_not_claim_the_network_matches(
        file: str, capsys: pytest.CaptureFixture[str]) -> None:
    done = FakeTarget("a", {"m": 1}, {"m": 1})
    down = FakeTarget("ollama/gpu-2", {}, {"m": 1}, unreachable=True)
    assert cli.cmd_plan(args(file), factory=lambda s: [done, down]) == 1
    out = capsys.readouterr().out
    assert "the network matches the file" not in out
    assert "1 target(s) could not be read" in out and "ollama/gpu-2" in out


def test_suspend_means_the_same_in_apply_as_in_the_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "desired_state.toml"
    path.write_text("version = 1\n[reconcile]\nsuspend = true\n")
    t = FakeTarget("a", {}, {"m": 1})
    assert cli.cmd_plan(args(str(path)), factory=lambda s: [t]) == 0
    out = capsys.readouterr().out
    assert "Plan: 1 to create" in out and "reconcile.suspend = true: changes are only reported" in out
    assert cli.cmd_apply(args(str(path)), factory=lambda s: [t]) == 0
    out = capsys.readouterr().out
    assert t.have == {} and t.applied == []
    assert "neither `ollafleet apply` nor the daemon makes them" in out
    assert "Nothing applied: reconcile.suspend = true; 1 change(s) only reported." in out
    assert cli.cmd_apply(args(str(path), json=True), factory=lambda s: [t]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == [] and any("suspend" in n["message"] for n in data["notes"])
