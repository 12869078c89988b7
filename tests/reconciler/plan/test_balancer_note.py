"""`plan` and `apply` say plainly when Open WebUI's Ollama URL (the balancer) does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from simulator import SimulatorThread
from tests.openwebui_harness import free_port

ROOT = Path(__file__).resolve().parents[3]


def file_with(tmp_path: Path, balancer_port: int, node_url: str) -> Path:
    file = tmp_path / "desired_state.toml"
    file.write_text(f'version = 1\n[balancer]\nlisten = "127.0.0.1:{balancer_port}"\n'
                    f'[[nodes]]\nname = "gpu-1"\nurl = "{node_url}"\n'
                    f'[openwebui]\nurl = "http://127.0.0.1:{free_port()}"\napi_key = "${{OWUI_KEY}}"\n')
    return file


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OWUI_KEY": "k"})


def test_plan_and_apply_say_when_the_balancer_does_not_answer(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        node = sim.add_node(name="gpu-1")
        file = file_with(tmp_path, free_port(), node.url)
        for command in ("plan", "apply"):
            shown = run(command, str(file))
            assert "is the ollafleet balancer, and it does not answer" in shown.stdout, shown.stdout + shown.stderr
            assert "until `ollafleet daemon` runs" in shown.stdout

        # something answering there (here: an Ollama node standing in for the balancer): no note
        answering = file_with(tmp_path, int(node.url.rsplit(":", 1)[1]), node.url)
        shown = run("plan", str(answering))
        assert "does not answer" not in shown.stdout, shown.stdout
