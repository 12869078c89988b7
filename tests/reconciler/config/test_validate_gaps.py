"""`validate` and `plan` catch what used to be found only by `apply` or at run time: a node that
is the balancer itself, addresses that collide, one node spelled twice, a local model source
that is missing or broken; and every problem of a file is said in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.config import load_text
from reconciler.errors import ConfigError
from simulator import Simulator, Timing
from simulator.modelsdir import write_model


def problems(text: str) -> list[str]:
    try:
        load_text("version = 1\n" + text, "f.toml", env={})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize("balancer, url", [
    ('listen = "0.0.0.0:11434"', "http://127.0.0.1:11434"),
    ('listen = "127.0.0.1:11434"', "http://localhost:11434/"),
    ('listen = "127.0.0.1:11434"', "http://127.1:11434"),
    ('listen = "10.0.0.9:8080"\npublic_url = "http://llm.lab.internal:11434"', "http://LLM.lab.internal:11434/"),
])
def test_a_node_that_is_the_balancer_itself_is_refused(balancer: str, url: str) -> None:
    found = problems(f'[balancer]\n{balancer}\n[[nodes]]\nname = "gpu-1"\nurl = "{url}"\n')
    assert len(found) == 1 and found[0].startswith("f.toml: nodes[0].url: ") and "own balancer" in found[0], found
    assert "loop" in found[0]


def test_listen_equal_to_status_listen_or_to_a_local_node_is_refused() -> None:
    found = problems('[balancer]\nlisten = "0.0.0.0:11434"\n[reconcile]\nstatus_listen = "127.0.0.1:11434"\n')
    assert found == ['f.toml: reconcile.status_listen: "127.0.0.1:11434" is the balancer\'s address too '
                     '(balancer.listen = "0.0.0.0:11434") (give the status page another port)']
    found = problems('[reconcile]\nstatus_listen = "0.0.0.0:11435"\n[[nodes]]\nname = "gpu-1"\n'
                     'url = "http://localhost:11435"\n')
    assert len(found) == 1 and "nodes[0].url" in found[0] and "status address" in found[0], found


def test_different_hosts_or_ephemeral_ports_are_no_collision() -> None:
    assert problems('[balancer]\nlisten = "0.0.0.0:11434"\n[reconcile]\nstatus_listen = "127.0.0.1:11435"\n'
                    '[[nodes]]\nname = "gpu-1"\nurl = "http://192.168.1.31:11434"\n'
                    '[[nodes]]\nname = "gpu-2"\nurl = "http://127.0.0.1:11436"\n') == []
    assert problems('[balancer]\nlisten = "127.0.0.1:0"\n[reconcile]\nstatus_listen = "127.0.0.1:0"\n') == []


@pytest.mark.parametrize("first, second", [
    ("http://localhost:11500", "http://127.0.0.1:11500"),
    ("http://127.0.0.1:11500", "http://127.1:11500/"),
    ("http://GPU-1.lab:11434", "http://gpu-1.lab:11434/"),
    ("http://[::1]:11434", "http://[0:0::1]:11434"),
    ("http://gpu-1.lab", "http://gpu-1.lab:80/"),
])
def test_the_same_node_spelled_twice_is_refused(first: str, second: str) -> None:
    found = problems(f'[[nodes]]\nname = "a"\nurl = "{first}"\n[[nodes]]\nname = "b"\nurl = "{second}"\n')
    assert len(found) == 1 and found[0].startswith('f.toml: nodes[1].url: duplicate node URL'), found
    assert "nodes[0]" in found[0]


def _cli(command: str, file: Path) -> argparse.Namespace:
    return argparse.Namespace(file=str(file), json=False, detailed_exitcode=False, no_env=True, command=command)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, str]:
    """Models qwq:0b to qwq:3b, whose local source cannot be read, each in its own way; the message expected."""
    not_json = write_model(tmp_path / "bad-manifest", "qwq:2b")
    not_json.manifest_path.write_text("<html>not found</html>")
    missing = write_model(tmp_path / "missing-blob", "qwq:3b", system="You are QwQ.")
    missing.blob_path(missing.weights).unlink()
    return {
        'gguf = "absent.gguf"': f"{tmp_path / 'absent.gguf'}: no such file",
        f'ollama_dir = "{tmp_path / "absent-folder"}"': "does not exist",
        'ollama_dir = "bad-manifest"': "is not an Ollama manifest",
        'ollama_dir = "missing-blob"': "is missing",
    }


def test_validate_reports_every_unreadable_source(tmp_path: Path, sources: dict[str, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text("version = 1\n" + "".join(f'[models."qwq:{i}b"]\n{line}\n' for i, line in enumerate(sources)))
    assert cli.cmd_validate(_cli("validate", file)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(sources), lines
    for i, (line, (source, said)) in enumerate(zip(lines, sources.items())):
        key = source.split(" ")[0]
        assert line.startswith(f'{file}: models."qwq:{i}b".{key}: ') and said in line, line


async def test_plan_shows_no_clean_create_from_an_unreadable_source(tmp_path: Path, sources: dict[str, str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant())
        for i, (source, said) in enumerate(sources.items()):
            file = tmp_path / "desired_state.toml"
            file.write_text(f'version = 1\n[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n'
                            f'[models."qwq:{i}b"]\n{source}\n')
            args = _cli("plan", file)
            args.json = True
            assert await asyncio.to_thread(cli.cmd_plan, args) == 1, source
            plan = json.loads(capsys.readouterr().out)
            assert plan["changes"] == [], source
            [error] = plan["errors"]
            assert error["target"] == "ollama/gpu-1" and said in error["message"], error
            assert error["message"].startswith(f'models."qwq:{i}b": ')
        assert node.write_requests() == []


def test_every_problem_of_a_file_is_reported_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text('version = 1\n'
                    '[balancer]\nlisten = "0.0.0.0:11434"\nsilence_timout = "5s"\n'       # schema: unknown key
                    '[reconcile]\ninterval = "soon"\n'                                    # schema: bad duration
                    '[[nodes]]\nname = "gpu-1"\nurl = "http://127.0.0.1:11434"\n'          # the balancer itself
                    'capabilty = 2\n'                                                    # schema: in a list entry
                    '[[nodes]]\nname = "gpu-1"\nurl = "http://192.168.1.32:11434"\n'       # duplicate name
                    '[models."qwq:32b"]\ngguf = "absent.gguf"\n'                          # no such file
                    '[models."qwq:32b".openwebui]\nparams = { num_ctx = "14k" }\n'        # bad parameter
                    '[openwebui]\nurl = "http://127.0.0.1:3000"\napi_key = "${UNSET_KEY_FOR_TEST}"\n'
                    'task_model = "codestral:22b"\n')                                     # not declared
    assert cli.cmd_validate(argparse.Namespace(file=str(file), no_env=False)) == 1
    lines = [line.removeprefix(f"{file}: ") for line in capsys.readouterr().err.splitlines()]
    wanted = ["balancer.silence_timout: unknown key", "reconcile.interval: expected a duration",
              "nodes[0].capabilty: unknown key",
              "openwebui.api_key: environment variable UNSET_KEY_FOR_TEST is not set",
              "nodes[0].url: \"http://127.0.0.1:11434\" is this daemon's own balancer",
              'nodes[1].name: duplicate node name "gpu-1"',
              'models."qwq:32b".openwebui.params.num_ctx: expected a positive integer',
              'openwebui.task_model: model "codestral:22b" is not declared',
              'models."qwq:32b".gguf: ']
    for start in wanted:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(wanted), lines
