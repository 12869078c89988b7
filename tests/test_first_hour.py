"""Issue 24: what a new administrator meets in the first hour: every option explains itself,
`--version` answers, and the README's commands, links and lists are true of this checkout."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from balancer.cli import build_parser as balancer_parser
from reconciler.cli import build_parser as ollafleet_parser
from simulator.cli import build_parser as simulate_parser
from simulator.cli import models_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser a person can ask --help of: ollafleet, each subcommand, the balancer's and
    the simulator's."""
    top = ollafleet_parser()
    found = [("ollafleet", top), ("python -m balancer", balancer_parser()),
             ("ollafleet simulate", simulate_parser("ollafleet simulate"))]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"ollafleet {name}", p) for name, p in action.choices.items()
                      if name != "simulate"]  # its options are the simulator's parser, above
    return found


@pytest.mark.parametrize("name,parser", parsers(), ids=[n for n, _ in parsers()])
def test_every_option_has_help_text(name: str, parser: argparse.ArgumentParser) -> None:
    silent = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
              if not isinstance(a, argparse._SubParsersAction)
              and (not a.help or a.help == argparse.SUPPRESS)]
    assert not silent, f"{name}: no help text for {silent}"


def test_subcommands_have_help_text() -> None:
    top = ollafleet_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())


def ollafleet(*args: str) -> subprocess.CompletedProcess[str]:
    """The `ollafleet` command as installed by the set-up (the console script)."""
    return subprocess.run([str(BIN / "ollafleet"), *args], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    from importlib.metadata import version

    done = ollafleet("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ollafleet {version('ollafleet')}"
    done = subprocess.run([sys.executable, "-m", "balancer", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and version("ollafleet") in done.stdout


def test_simulate_help_names_itself_and_the_fast_pulls() -> None:
    done = ollafleet("simulate", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: ollafleet simulate")
    text = " ".join(done.stdout.split())
    assert "100 MB/s" in text and "--timing fast" in text


def test_simulate_lists_every_model_of_the_registry() -> None:
    from simulator.catalogue import CATALOGUE

    done = ollafleet("simulate", "--list-models")
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:]}
    assert listed == {m.name for m in CATALOGUE.values()}


def test_readme_lists_the_simulated_registry_as_it_is() -> None:
    assert models_table() in README, "README's model table differs: paste `ollafleet simulate --list-models`"


def command_table() -> list[str]:
    """The first cell of each row of the README's command table."""
    section = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, re.M)]


def test_every_command_in_the_readme_table_answers_help() -> None:
    commands = command_table()
    assert len(commands) >= 10
    for command in commands:
        words = command.split()
        if words[:3] == ["python", "-m", "balancer"]:
            cmd, usage = [sys.executable, "-m", "balancer"], "usage: python -m balancer"
        else:
            assert words[0] == "ollafleet", command
            cmd, usage = [str(BIN / "ollafleet"), words[1]], f"usage: ollafleet {words[1]}"
        done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.startswith(usage), (command, done.stdout[:200])


def test_readme_links_resolve_inside_the_repository() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link.split("#")[0] for link in links
             if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert local, "no local links found: the pattern is wrong"
    for link in local:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), f"README links to {link}: no such file here"


def test_readme_states_the_open_webui_install_size_the_script_says() -> None:
    script = (ROOT / "scripts" / "openwebui-venv.sh").read_text()
    size = re.search(r"about (\d+ GB)", script)
    assert size is not None and f"about {size.group(1)}" in README
