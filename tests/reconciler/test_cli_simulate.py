"""`ollafleet simulate` hands its options to the simulator: nodes a person can curl."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx


def test_ollafleet_simulate_runs_nodes_that_answer() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "simulate", "--nodes", "2", "--port", "0",
                             "--models", "qwq:32b"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        urls = []
        for line in proc.stdout:
            found = re.match(r"(sim-\d)\s+(http://127\.0\.0\.1:\d+)", line)
            if found:
                urls.append(found.group(2))
            if len(urls) == 2:
                break
        for url in urls:
            assert httpx.get(url + "/api/tags", timeout=5).json()["models"][0]["name"] == "qwq:32b"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
