"""Start a real Open WebUI (0.12.4, from scripts/openwebui-venv.sh) on 127.0.0.1 for tests.

    from tests.openwebui_harness import start_openwebui

    owui = start_openwebui("http://127.0.0.1:PORT")             # fresh instance, onboarding
    owui = start_openwebui(url, admin=("a@example.com", "pw"))  # admin created at startup
    ...  owui.url, owui.pid, owui.data_dir, owui.log_tail()
    owui.restart(env={"ENABLE_PERSISTENT_CONFIG": "false"})     # same port and data dir
    owui.stop()                                                  # by PID; removes the data dir

It takes about 15 s and 1.2 GB of RAM: start one per test session. A missing venv raises
OpenWebUIUnavailable (a test error, never a skip).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VERSION = "0.12.4"
REPO = Path(__file__).resolve().parent.parent


class OpenWebUIUnavailable(RuntimeError):
    """The Open WebUI venv is missing, or the server did not start."""


def venv_dir() -> Path:
    cache = Path(os.environ.get("OLLAFLEET_CACHE") or Path.home() / ".cache" / "ollafleet")
    return cache / f"owui-{VERSION}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OpenWebUI:
    url: str
    pid: int
    data_dir: Path
    log_path: Path
    admin: tuple[str, str] | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_data: bool = field(default=True, repr=False)
    _argv: list[str] = field(default_factory=list, repr=False)
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def restart(self, *, env: dict[str, str] | None = None, timeout: float = 90.0) -> None:
        """Stop the server and start it again on the same port and data dir (`env` overrides)."""
        self._terminate()
        self._env.update(env or {})
        _launch(self, timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after `timeout`) and remove the data dir it made."""
        self._terminate(timeout)
        if self._owns_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _terminate(self, timeout: float = 15.0) -> None:
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass

    def __enter__(self) -> OpenWebUI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_env(venv: Path, data_dir: Path, ollama_url: str, admin: tuple[str, str] | None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment (like `env -i`): offline, no embedding model, no OpenAI."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secrets.token_hex(16),
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAG_EMBEDDING_MODEL": "",
        "ENABLE_OPENAI_API": "false",
        "OLLAMA_BASE_URL": ollama_url,
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
    }
    if admin is not None:
        env["WEBUI_ADMIN_EMAIL"], env["WEBUI_ADMIN_PASSWORD"] = admin
    env.update(extra or {})
    return env


def start_openwebui(ollama_url: str, *, admin: tuple[str, str] | None = None,
                    env: dict[str, str] | None = None, data_dir: Path | None = None,
                    timeout: float = 90.0) -> OpenWebUI:
    """Start `open-webui serve` on a free 127.0.0.1 port and wait until /health answers.

    `admin` creates that admin at startup (else the instance is fresh, in onboarding);
    `env` adds or overrides variables; `data_dir` reuses a folder (a restart), kept on stop.
    """
    venv = venv_dir()
    exe = venv / "bin" / "open-webui"
    if not exe.exists():
        raise OpenWebUIUnavailable(
            f"Open WebUI {VERSION} is not installed at {venv}: run scripts/openwebui-venv.sh "
            "(the README's test command does), or set OLLAFLEET_CACHE to where it is")
    owns = data_dir is None
    data = Path(tempfile.mkdtemp(prefix="owui-")) if data_dir is None else data_dir
    port = free_port()
    owui = OpenWebUI(f"http://127.0.0.1:{port}", 0, data, data / "server.log", admin, None, owns,
                     [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
                     server_env(venv, data, ollama_url, admin, env))
    atexit.register(owui.stop)
    _launch(owui, timeout)
    return owui


def _launch(owui: OpenWebUI, timeout: float) -> None:
    with owui.log_path.open("ab") as log:
        proc = subprocess.Popen(owui._argv, cwd=owui.data_dir, env=owui._env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    owui._process, owui.pid = proc, proc.pid
    try:
        _wait_healthy(owui, proc, timeout)
    except BaseException:
        owui.stop()
        raise


def _wait_healthy(owui: OpenWebUI, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            code = proc.poll()
            if code is not None:
                raise OpenWebUIUnavailable(
                    f"open-webui exited with status {code} before it was ready; log tail:\n{owui.log_tail()}")
            try:
                if client.get(owui.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise OpenWebUIUnavailable(
                    f"open-webui did not answer /health within {timeout:.0f} s; log tail:\n{owui.log_tail()}")
            try:
                proc.wait(0.2)          # wakes at once if it dies
            except subprocess.TimeoutExpired:
                pass
