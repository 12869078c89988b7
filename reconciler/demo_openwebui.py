"""`ollafleet demo --openwebui`: a real Open WebUI on 127.0.0.1 next to the simulated nodes.

It comes from the same cached install the tests use (scripts/openwebui-venv.sh, installed when
missing), starts with a fresh data folder and an admin created at startup, and talks to the
demo's balancer. The demo file gets an [openwebui] section whose credentials come from the
environment, so the daemon configures it like a real one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "scripts" / "openwebui-venv.sh"
EMAIL_VAR, PASSWORD_VAR = "OLLAFLEET_DEMO_ADMIN_EMAIL", "OLLAFLEET_DEMO_ADMIN_PASSWORD"

# What the daemon declares in Open WebUI for the demo's models (appended to the demo file).
SECTION = """
[openwebui]
url = "{url}"
admin_email = "${{{email}}}"
admin_password = "${{{password}}}"
task_model = "codestral:22b"

[models."codestral:22b".openwebui]
name = "Codestral 22B"
visibility = "public"
params = {{ temperature = 0.1 }}

[models."codestral-30k".openwebui]
name = "Codestral, 30k context"
description = "codestral with the seed's parameters baked in"
visibility = "public"
"""


class OpenWebUIError(RuntimeError):
    pass


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OpenWebUIError("no free port on 127.0.0.1")


def venv() -> Path:
    """The cached Open WebUI install; installs it (minutes, once) when missing."""
    if not SETUP.exists():
        raise OpenWebUIError(f"{SETUP} is missing: run the demo from an ollafleet checkout")
    print("Open WebUI: checking the cached install (the first time it is installed: a few minutes, ~7 GB)...",
          flush=True)
    done = subprocess.run(["bash", str(SETUP)], stdout=subprocess.PIPE, text=True)   # its progress on stderr
    if done.returncode != 0:
        raise OpenWebUIError(f"{SETUP} failed (exit code {done.returncode}); see the lines above")
    return Path(done.stdout.strip().splitlines()[-1])


class DemoOpenWebUI:
    """A running Open WebUI for the demo; stop() ends it (by its process group) and removes its data."""

    def __init__(self, balancer_url: str, preferred_port: int = 11498, timeout: float = 180.0) -> None:
        home = venv()
        self.port = _free_port(preferred_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.email = "admin@example.com"
        self.password = secrets.token_urlsafe(12)
        self.data = Path(tempfile.mkdtemp(prefix="ollafleet-demo-owui-"))
        env = {"PATH": f"{home / 'bin'}:/usr/bin:/bin", "HOME": str(self.data), "LANG": "C.UTF-8",
               "DATA_DIR": str(self.data), "WEBUI_SECRET_KEY": secrets.token_hex(16),
               "WEBUI_ADMIN_EMAIL": self.email, "WEBUI_ADMIN_PASSWORD": self.password,
               "OLLAMA_BASE_URL": balancer_url, "ENABLE_OPENAI_API": "false", "OFFLINE_MODE": "true",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAG_EMBEDDING_MODEL": "",
               "ANONYMIZED_TELEMETRY": "false", "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true"}
        self.log = self.data / "open-webui.log"
        print(f"Open WebUI: starting on {self.url} (about 20-60 s; its log: {self.log})...", flush=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(home / "bin" / "open-webui"), "serve", "--host", "127.0.0.1",
                                          "--port", str(self.port)], cwd=self.data, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while self.proc.poll() is None:
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise OpenWebUIError(f"Open WebUI did not start within {timeout:.0f} s (log: {self.log})")
                time.sleep(0.3)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        raise OpenWebUIError(f"Open WebUI exited with status {self.proc.returncode}:\n{tail}")

    def declare(self, demo_text: str) -> str:
        """The demo file with an [openwebui] section for this instance; sets its credentials in the
        environment (the file names only the variables)."""
        os.environ[EMAIL_VAR], os.environ[PASSWORD_VAR] = self.email, self.password
        return demo_text + SECTION.format(url=self.url, email=EMAIL_VAR, password=PASSWORD_VAR)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.data, ignore_errors=True)


def print_credentials(owui: DemoOpenWebUI) -> None:
    print(f"Open WebUI: {owui.url}  admin {owui.email}  password {owui.password}\n"
          "  (printed once; the instance and its data are removed when the demo stops)", file=sys.stdout, flush=True)
