"""Every malformed file is refused with one clear line per problem, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.config import load
from reconciler.errors import ConfigError

HERE = Path(__file__).parent / "malformed"
CASES = sorted(HERE.glob("*.toml"))
ENV = {"OLLAFLEET_TEST_KEY": "test-key-value"}


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_malformed_file_gives_the_expected_lines(case: Path) -> None:
    expected = case.with_suffix(".err").read_text().splitlines()
    with pytest.raises(ConfigError) as caught:
        load(case, env=ENV)
    lines = [str(p) for p in caught.value.problems]
    assert lines == [f"{case}: {line}" for line in expected]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_cli_exit_1_one_line_per_problem_no_traceback() -> None:
    case = HERE / "unknown_param.toml"
    result = run_cli("validate", str(case), env=ENV)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{case}: " + (HERE / "unknown_param.err").read_text().strip()]
    assert "Traceback" not in result.stderr


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    file = tmp_path / "desired_state.toml"
    file.write_text('version = 1\n[openwebui]\nurl = "http://127.0.0.1:3000"\napi_key = "sk-live-123"\n')
    result = run_cli("validate", str(file))
    assert result.returncode == 1
    assert "sk-live-123" not in result.stderr + result.stdout


def test_missing_file_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'version = 1\n# caf\xe9\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(bad byte at line 2\)"):
        load(binary)


def test_cli_on_a_directory_exits_1(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "is a directory" in result.stderr and "Traceback" not in result.stderr
