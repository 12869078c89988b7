"""`ollafleet bundle`: the wheels install on a PC with no package index, and ollafleet runs there."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def offline_env() -> dict[str, str]:
    """No pip configuration at all: no index, no extra find-links, no constraints from this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _build_leftovers() -> dict[str, float]:
    """What a wheel build in the checkout would leave: build/ and *.egg-info, with their mtimes."""
    found = [ROOT / "build", *ROOT.glob("*.egg-info")]
    return {p.name: p.stat().st_mtime for p in found if p.exists()}


@pytest.fixture(scope="module")
def index_reachable(tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest",
                            str(tmp_path_factory.mktemp("probe")), "tomli-w"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"the package index is unreachable, so no bundle can be built here: {last}")


def test_the_bundle_installs_with_no_index_and_ollafleet_validates(index_reachable: None, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    before = _build_leftovers()   # an editable install (scripts/setup.sh) leaves its own egg-info
    run(sys.executable, "-m", "reconciler", "bundle", "-o", out, "--platform", "linux", "--python", python, cwd=ROOT)
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert any(w.startswith("ollafleet-") for w in wheels) and any(w.startswith("pydantic_core-") for w in wheels)
    assert "--no-index --find-links" in (out / "INSTALL.txt").read_text()
    assert _build_leftovers() == before   # the checkout stays as it was: bundle builds in a copy

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=offline_env())
    run(venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--find-links", out, "ollafleet",
        cwd=tmp_path, env=offline_env())
    where = run(venv / "bin" / "python", "-c", "import reconciler; print(reconciler.__file__)", cwd=tmp_path,
                env=offline_env())
    assert str(venv) in where
    (tmp_path / "desired_state.toml").write_text(
        'version = 1\n[[nodes]]\nname = "gpu-1"\nurl = "http://127.0.0.1:11501"\n'
        '[models."qwq:32b"]\n')
    said = run(venv / "bin" / "ollafleet", "validate", cwd=tmp_path, env=offline_env())
    assert "desired_state.toml: valid (1 nodes; qwq:32b)" in said


def test_windows_wheels_follow_the_windows_markers(index_reachable: None, tmp_path: Path) -> None:
    """tzlocal needs tzdata on Windows only, and uvloop is not for Windows: pip alone would judge by this PC."""
    from reconciler import bundle

    target = bundle.Target("windows", "3.12")
    bundle.collect(target, [bundle.Requirement("apscheduler>=3.10,<4"),
                            bundle.Requirement("uvloop>=0.19; sys_platform != 'win32'")], tmp_path)
    assert "tzdata" in target.got and "uvloop" not in target.got
    assert all(zipfile.is_zipfile(p) for p in target.got.values())
