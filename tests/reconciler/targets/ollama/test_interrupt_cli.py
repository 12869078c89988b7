"""Ctrl-C during `ollafleet apply` stops cleanly and says what was done; the next apply finishes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from simulator import SimulatorThread, Timing


def test_ctrl_c_during_apply_says_what_was_done(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        node = sim.add_node(name="gpu-1", timing=Timing(pull_bps=4e9))   # qwq:32b takes ~5 s
        file = tmp_path / "desired_state.toml"
        file.write_text(f'version = 1\n[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n'
                        '[models."llama3.2:1b"]\n[models."qwq:32b"]\n[reconcile]\nmax_pulls_per_node = 1\n')
        # A CI runner may start pytest as a background job, with SIGINT ignored: a child would
        # inherit that and never see the Ctrl-C. Only "ignored" is inherited across exec, so
        # any handler here gives the child the default (KeyboardInterrupt) again.
        before = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", str(file)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            signal.signal(signal.SIGINT, before)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ok ") and "llama3.2:1b" in line:
                break
        sim.wait_for(lambda: any(r.path == "/api/pull" and (r.body or {}).get("model") == "qwq:32b"
                                 for r in node.requests), timeout=10)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "Interrupted: 1 change(s) were applied before the stop:" in err
        assert 'ollama/gpu-1 models."llama3.2:1b"' in err and "Traceback" not in err
        assert node.installed_models() == ["llama3.2:1b"]
        # the pull in progress was abandoned on the node, not left running
        sim.wait_for(lambda: any(r.client_disconnected for r in node.requests if r.path == "/api/pull"), timeout=10)

        again = subprocess.run([sys.executable, "-m", "reconciler", "apply", str(file)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert sorted(node.installed_models()) == ["llama3.2:1b", "qwq:32b"]
