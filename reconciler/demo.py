"""`ollafleet demo`: simulated Ollama nodes on 127.0.0.1 plus the daemon on the demo network
(reconciler/demo.toml, shipped in the package so an installed ollafleet runs it too); with
--openwebui also a real Open WebUI that the daemon configures (demo_openwebui.py)."""

from __future__ import annotations

import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.config import load
from reconciler.daemon.run import Service
from reconciler.errors import ConfigError

# package data (pyproject.toml); a wheel installs unpacked, so this is a file the daemon can watch
DEMO_FILE = Path(str(files("reconciler").joinpath("demo.toml")))


def main(file: str | None = None, openwebui: bool = False) -> int:
    from simulator import SimulatorThread

    path = Path(file) if file else DEMO_FILE
    if openwebui:
        return _with_openwebui(path)
    try:
        state = load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    hosts = {urlsplit(n.url).hostname for n in state.nodes}
    if hosts - {"127.0.0.1", "localhost"}:
        print(f"{path}: the demo only simulates nodes on 127.0.0.1", file=sys.stderr)
        return 1
    with SimulatorThread() as sim:
        for node in state.nodes:
            sim.add_node(name=node.name, models=[], port=urlsplit(node.url).port or 11434)
        print(f"Simulated Ollama nodes (empty, like fresh GPU PCs): "
              f"{', '.join(f'{n.name} {n.url}' for n in state.nodes)}", flush=True)
        print(f"The daemon now applies {path}: watch it pull the models. Then try:\n"
              f"  curl {state.balancer_public_url()}/api/tags\n"
              f"  curl {state.balancer_public_url()}/api/chat -d "
              "'{\"model\": \"codestral:22b\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}'\n"
              f"  {_ollafleet()} status --url http://{state.reconcile.status_listen}\n"
              f"  the status page: http://{state.reconcile.status_listen}/\n"
              f"Edit {path} and save: the change is applied within seconds. Ctrl-C stops everything.",
              flush=True)
        from balancer.cli import run as run_loop

        return run_loop(Service(path, drain_timeout=5.0).run())


def _ollafleet() -> str:
    """How this user runs ollafleet: the path it was started by (.venv/bin/ollafleet in a checkout)."""
    return sys.argv[0] if Path(sys.argv[0]).name == "ollafleet" else "ollafleet"


def _with_openwebui(path: Path) -> int:
    """Start Open WebUI, then run the plain demo on a copy of the file that declares it."""
    from reconciler.demo_openwebui import DemoOpenWebUI, OpenWebUIError, print_credentials

    try:
        balancer = load(path, skip_env=True).balancer_public_url()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        owui = DemoOpenWebUI(balancer)
    except OpenWebUIError as exc:
        print(f"demo --openwebui: {exc}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="ollafleet-demo-") as folder:  # removed at the end
            composed = Path(folder) / "demo.toml"
            composed.write_text(owui.declare(path.read_text()))
            print_credentials(owui)
            print(f"Open WebUI's models, parameters and settings come from {composed}: the daemon applies "
                  "them once the models are pulled. Log in and chat: the answers come through the balancer.",
                  flush=True)
            return main(str(composed))
    finally:
        owui.stop()
