"""`ollafleet demo --openwebui`: a real Open WebUI that the daemon configures, with an admin whose
credentials are printed once; chat through it reaches the simulated nodes via the balancer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.reconciler.daemon.test_demo import demo_on_free_ports, wait_for

pytestmark = pytest.mark.openwebui
ROOT = Path(__file__).resolve().parents[3]


def test_demo_with_openwebui_configures_it(tmp_path: Path) -> None:
    file, ports = demo_on_free_ports(tmp_path)
    status = f"http://127.0.0.1:{ports['11499']}"
    tmp = tmp_path / "tmp"  # the demo's temp folders land here, to check that none is left
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "demo", str(file), "--openwebui"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        def credentials() -> re.Match[str] | None:
            return next((m for line in list(lines) if (m := re.search(
                r"Open WebUI: (http://127\.0\.0\.1:\d+)  admin (\S+)  password (\S+)", line))), None)
        found = wait_for(credentials, timeout=240)
        url, email, password = found.group(1), found.group(2), found.group(3)

        def openwebui_converged() -> bool:
            data = httpx.get(status + "/status", timeout=2).json()
            rec = data["targets"].get("openwebui")
            return bool(rec and rec["ok"] and data["last_pass"]["ok"] and not data["pass_running"])
        wait_for(openwebui_converged, timeout=240)

        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            token = client.post("/api/v1/auths/signin", json={"email": email, "password": password}).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            models = {m["id"]: m for m in client.get("/api/models", headers=headers).json()["data"]}
            assert models["codestral:22b"]["name"] == "Codestral 22B"
            r = client.post("/api/chat/completions", headers=headers, json={
                "model": "codestral:22b", "stream": False, "messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 200 and "Simulated answer" in r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(5)
    out = "".join(lines)
    assert out.count(password) == 1, "the admin password is printed exactly once"
    assert proc.returncode == 0, out[-3000:]
    assert not list(tmp.glob("ollafleet-demo-*")), "the demo left its folders in the temp directory"
