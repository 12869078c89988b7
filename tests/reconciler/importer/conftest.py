"""One hand-built network per session: simulated GPU nodes, a simulated node standing in for
the balancer, and ONE real Open WebUI configured through its API the way an administrator
following the seed would (settings, model entries made Public, an API key)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler import cli, importer
from simulator import SimNode, SimulatorThread, Timing
from tests.openwebui_harness import OpenWebUI, start_openwebui

ADMIN = ("admin@example.com", "Adm1n-pass!")
CLOCK = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
PUBLIC = [{"principal_type": "user", "principal_id": "*", "permission": "read"}]


@dataclass
class Network:
    sim: SimulatorThread
    nodes: dict[str, SimNode]
    lb: SimNode                   # what Open WebUI's Ollama connection points at
    owui: OpenWebUI
    env: dict[str, str]           # the credentials' environment variables

    def node_args(self, *names: str) -> list[str]:
        out: list[str] = []
        for name in names or sorted(self.nodes):
            out += ["--node", f"{name}={self.nodes[name].url}"]
        return out


@dataclass
class Imported:
    code: int
    text: str
    stderr: str
    path: Path


def run_import(argv: list[str], env: dict[str, str], now: datetime = CLOCK) -> tuple[int, str]:
    """`ollafleet import ARGV` in this process with a fixed clock; returns (exit code, stderr)."""
    args = cli.build_parser().parse_args(["import", *argv])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = importer.cmd_import(args, now=now, env=env)
    return code, err.getvalue()


def do_import(network: Network, out: Path, *extra: str, openwebui: bool = True) -> Imported:
    argv = [*network.node_args(), "-o", str(out), *extra]
    if openwebui:
        argv += ["--openwebui", network.owui.url]
    code, err = run_import(argv, network.env)
    return Imported(code, out.read_text() if out.exists() else "", err, out)


def _pin(node: SimNode, model: str) -> None:
    httpx.post(node.url + "/api/generate", json={"model": model, "keep_alive": -1}, timeout=30).raise_for_status()


def _set_group(admin: httpx.Client, read: str, write: str, **values: Any) -> None:
    body = admin.get(read).raise_for_status().json()
    body.pop("sessions_revoked", None)
    body.update(values)
    admin.post(write, json=body).raise_for_status()


def _entry(admin: httpx.Client, model_id: str, params: dict[str, Any], caps: dict[str, bool],
           name: str | None = None, tags: list[dict[str, str]] | None = None) -> None:
    meta: dict[str, Any] = {"capabilities": {"file_context": True, "vision": True, "file_upload": True,
                                             "web_search": True, "image_generation": True,
                                             "code_interpreter": True, "terminal": True, "citations": True,
                                             "status_updates": True, "memory": True, "builtin_tools": True,
                                             **caps},
                            "description": None, "voice_avatar": None}
    if tags:
        meta["tags"] = tags
    admin.post("/api/v1/models/create", json={"id": model_id, "base_model_id": None, "name": name or model_id,
                                              "meta": meta, "params": params, "access_grants": [],
                                              "is_active": True}).raise_for_status()
    admin.post("/api/v1/models/model/access/update",
               json={"id": model_id, "name": name or model_id, "access_grants": PUBLIC}).raise_for_status()


def configure_by_hand(owui: OpenWebUI) -> str:
    """The seed's clicks, as API calls; returns the admin's API key."""
    token = httpx.post(owui.url + "/api/v1/auths/signin", timeout=30,
                       json={"email": ADMIN[0], "password": ADMIN[1]}).raise_for_status().json()["token"]
    with httpx.Client(base_url=owui.url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as admin:
        _set_group(admin, "/api/v1/auths/admin/config", "/api/v1/auths/admin/config",
                   DEFAULT_USER_ROLE="user", ENABLE_SIGNUP=True, ENABLE_API_KEYS=True)
        key = admin.post("/api/v1/auths/api_key").raise_for_status().json()["api_key"]
        _set_group(admin, "/api/v1/tasks/config", "/api/v1/tasks/config/update", TASK_MODEL="codestral:22b")
        _set_group(admin, "/api/v1/configs/code_execution", "/api/v1/configs/code_execution",
                   ENABLE_CODE_INTERPRETER=False, ENABLE_CODE_EXECUTION=True, CODE_EXECUTION_ENGINE="pyodide")
        _set_group(admin, "/openai/config", "/openai/config/update", ENABLE_OPENAI_API=False)
        _entry(admin, "codestral:22b", {"num_ctx": 30000, "max_tokens": 29000, "temperature": 0.1,
                                        "top_p": 0.95, "repeat_penalty": 1.15},
               {"vision": False, "citations": False})
        # a display name, plus two things the file cannot hold: a tag and an Open WebUI-only param
        _entry(admin, "qwq:32b", {"num_ctx": 14000, "max_tokens": 13000, "function_calling": "native"},
               {"vision": False, "citations": False}, name="QwQ 32B", tags=[{"name": "reasoning"}])
        # an entry kept from a model the nodes no longer hold, and a workspace preset
        _entry(admin, "llama3.1:8b", {"num_ctx": 8192}, {})
        admin.post("/api/v1/models/create", json={
            "id": "code-helper", "base_model_id": "codestral:22b", "name": "Code helper", "meta": {},
            "params": {"system": "You write Python."}, "access_grants": [], "is_active": True}).raise_for_status()
    return str(key)


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    with SimulatorThread() as sim:
        fast = Timing.instant()
        nodes = {
            "gpu-1": sim.add_node(name="gpu-1", models=["codestral:22b", "qwq:32b"], timing=fast),
            "gpu-2": sim.add_node(name="gpu-2", models=["codestral:22b", "qwq:32b"], timing=fast),
            "gpu-3": sim.add_node(name="gpu-3", models=["codestral:22b", "nomic-embed-text:v1.5"], timing=fast),
        }
        nodes["gpu-1"].install("qwq-long", from_="qwq:32b", system="Think briefly.",
                               parameters={"num_ctx": 32768, "temperature": 0.3})
        for node in nodes.values():
            _pin(node, "codestral:22b")
        lb = sim.add_node(name="lb", models=["codestral:22b", "qwq:32b"], timing=fast)
        owui = start_openwebui(lb.url, admin=ADMIN)
        try:
            key = configure_by_hand(owui)
            yield Network(sim, nodes, lb, owui, {"OPENWEBUI_API_KEY": key, "OWUI_EMAIL": ADMIN[0],
                                                 "OWUI_PASSWORD": ADMIN[1]})
        finally:
            owui.stop()


@pytest.fixture(scope="session")
def imported(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The network imported once (API key from $OPENWEBUI_API_KEY); tests read the result."""
    return do_import(network, tmp_path_factory.mktemp("import") / "desired_state.toml")


def cli_run(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.main(argv)
