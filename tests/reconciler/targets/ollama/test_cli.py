"""`ollafleet plan` / `apply` end to end on a temp desired_state.toml and simulated nodes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli
from reconciler.config import DesiredState
from reconciler.targets.ollama import node_targets

from .conftest import FAST

MODELS = """
[models."codestral:22b"]
keep_loaded = true

[models."codestral-30k"]
from = "codestral:22b"
parameters = { num_ctx = 30000, temperature = 0.1 }
"""


@pytest.fixture
def nodes() -> Iterator[list[Any]]:
    from simulator import SimulatorThread, Timing

    with SimulatorThread() as sim:
        yield [sim.add_node(name=f"sim-{i}", port=0, timing=Timing.instant()) for i in (1, 2)]


def factory(state: DesiredState) -> list[Any]:
    return list(node_targets(state, **FAST))


def args(file: Path, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(file=str(file), json=kw.get("json", False),
                              detailed_exitcode=kw.get("detailed_exitcode", False))


def test_plan_apply_plan(nodes: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text("version = 1\n" + "".join(f'[[nodes]]\nname = "{n.name}"\nurl = "{n.url}"\n' for n in nodes) + MODELS)
    assert cli.cmd_plan(args(file, detailed_exitcode=True), factory) == 2
    out = capsys.readouterr().out
    assert 'ollama/sim-1' in out and '+ models."codestral:22b"' in out and "Plan: 4 to create" in out
    assert "loaded" not in out.split("note")[0]      # loading is the balancer's, never a planned change

    assert cli.cmd_apply(args(file), factory) == 0
    out = capsys.readouterr().out
    assert "Applied 4 of 4 changes." in out
    for n in nodes:
        assert sorted(n.installed_models()) == ["codestral-30k:latest", "codestral:22b"]
        n.clear_requests()

    assert cli.cmd_plan(args(file, detailed_exitcode=True), factory) == 0
    assert "No changes" in capsys.readouterr().out
    assert cli.cmd_apply(args(file, json=True), factory) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changes"] == [] and report["errors"] == []
    assert any(note["message"].startswith("Ollama 0.13.5; 2 of 2 models present; nothing loaded")
               for note in report["notes"])
    assert any("OLLAMA_NUM_PARALLEL" in note["message"] and "not changeable" in note["message"]
               for note in report["notes"])
    assert [r for n in nodes for r in n.write_requests()] == []


def test_the_real_command_line_uses_build_targets(nodes: list[Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text("version = 1\n" + "".join(f'[[nodes]]\nname = "{n.name}"\nurl = "{n.url}"\n' for n in nodes)
                    + '[models."llama3.2:1b"]\n')
    assert cli.main(["plan", str(file), "--detailed-exitcode"]) == 2
    assert cli.main(["apply", str(file)]) == 0
    assert cli.main(["plan", str(file), "--detailed-exitcode"]) == 0
    assert all(n.installed_models() == ["llama3.2:1b"] for n in nodes)
