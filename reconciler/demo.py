"""`ollafleet demo`: simulated Ollama nodes on 127.0.0.1 plus the daemon on examples/demo.toml."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.config import load
from reconciler.daemon.run import Service
from reconciler.errors import ConfigError

DEMO_FILE = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


def main(file: str | None = None) -> int:
    from simulator import SimulatorThread

    path = Path(file) if file else DEMO_FILE
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
              f"  .venv/bin/ollafleet status --url http://{state.reconcile.status_listen}\n"
              f"Edit {path} and save: the change is applied within seconds. Ctrl-C stops everything.",
              flush=True)
        from balancer.cli import run as run_loop

        return run_loop(Service(path, drain_timeout=5.0).run())
