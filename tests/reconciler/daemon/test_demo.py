"""`ollafleet demo` as a newcomer runs it: simulated nodes converge, a chat works through the
balancer, `ollafleet status` shows it, Ctrl-C stops everything."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.openwebui_harness import free_port

from reconciler.demo import DEMO_FILE as DEMO


def demo_on_free_ports(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    text = DEMO.read_text()
    ports = {p: str(free_port()) for p in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)))}
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    file = tmp_path / "demo.toml"
    file.write_text(text)
    return file, ports


def wait_for(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_demo_runs_a_network_a_newcomer_can_use(tmp_path: Path) -> None:
    file, ports = demo_on_free_ports(tmp_path)
    balancer = f"http://127.0.0.1:{ports['11500']}"
    status = f"http://127.0.0.1:{ports['11499']}"
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "demo", str(file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def converged() -> bool:
            last = httpx.get(status + "/status", timeout=2).json()["last_pass"]
            return bool(last and last["ok"] and last["applied"] > 0)
        wait_for(converged)
        tags = httpx.get(balancer + "/api/tags", timeout=5).json()
        assert {m["name"] for m in tags["models"]} == {"codestral:22b", "qwq:32b", "codestral-30k:latest"}
        r = httpx.post(balancer + "/api/chat", timeout=30, json={
            "model": "codestral-30k", "stream": False, "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200 and r.json()["message"]["content"].startswith("Simulated answer")

        shown = subprocess.run([sys.executable, "-m", "reconciler", "status", "--url", status],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        for name in ("ollama/sim-1", "sim-2", "sim-3", "Reliable", "codestral-30k"):
            assert name in shown.stdout
        as_json = json.loads(subprocess.run([sys.executable, "-m", "reconciler", "status", "--url", status, "--json"],
                                            capture_output=True, text=True, timeout=30).stdout)
        assert as_json["balancer"]["metrics"]["requests_total"] >= 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Simulated Ollama nodes" in out and "stopped" in out


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    shown = subprocess.run([sys.executable, "-m", "reconciler", "status", "--url", url],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 1 and "is `ollafleet daemon` running?" in shown.stderr
