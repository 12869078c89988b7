"""`ollafleet demo` from an installed wheel (not a checkout): the demo network ships with the
package, the simulated network converges, Ctrl-C stops it, and no temp folder is left.

Quick, and with no package index beyond what scripts/setup.sh already needed: the wheel is
built as `ollafleet bundle` builds it (pip fetches setuptools for the build the way the set-up's
own install did, from its cache), then installed with --no-deps and --no-index into a fresh
venv; that venv sees this environment's dependencies through one path line (a .pth file), but
not its editable ollafleet, since a path listed in a .pth file gets no .pth processing of its
own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx

from reconciler import bundle
from tests.reconciler.daemon.test_demo import demo_on_free_ports, wait_for

ROOT = Path(__file__).resolve().parents[2]


def run(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    src, wheels, venv, tmp = (tmp_path / n for n in ("src", "wheels", "venv", "tmp"))
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(TMPDIR=str(tmp), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for name in bundle.SOURCES:  # what `ollafleet bundle` builds its wheel from
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, src,
        cwd=tmp_path, env=env)
    wheel = next(wheels.glob("ollafleet-*.whl"))
    assert "reconciler/demo.toml" in zipfile.ZipFile(wheel).namelist()

    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel,
        cwd=tmp_path, env=env)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path, env=env).strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found = run(python, "-c", "from reconciler.demo import DEMO_FILE; print(DEMO_FILE, DEMO_FILE.is_file())",
                cwd=tmp_path, env=env).split()
    assert found[0].startswith(str(site)) and found[1] == "True"  # the installed copy, not the checkout's

    # the shipped file, on free ports (the test must not take the demo's fixed ones)
    file, ports = demo_on_free_ports(tmp_path)
    assert file.read_text().count("127.0.0.1:") == Path(found[0]).read_text().count("127.0.0.1:")
    status = f"http://127.0.0.1:{ports['11499']}"
    proc = subprocess.Popen([str(venv / "bin" / "ollafleet"), "demo", str(file)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def converged() -> bool:
            data = httpx.get(status + "/status", timeout=2).json()
            last = data["last_pass"]
            return bool(last and last["ok"] and last["applied"] > 0 and not data["pass_running"])
        wait_for(converged, timeout=90)
        tags = httpx.get(f"http://127.0.0.1:{ports['11500']}/api/tags", timeout=5).json()
        assert {m["name"] for m in tags["models"]} >= {"codestral:22b", "qwq:32b"}
    finally:
        proc.send_signal(signal.SIGINT)  # by its PID, as Ctrl-C would
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"{venv}/bin/ollafleet status --url" in out  # the demo names the command as it was run
    assert not list(tmp.glob("ollafleet-*")), "the demo left a folder in the temp directory"
