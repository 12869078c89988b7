"""The shipped files are valid and say what the seed procedure says."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import load, load_text
from reconciler.config.values import Secret

ROOT = Path(__file__).resolve().parents[3]
FILES = [ROOT / "desired_state.toml", ROOT / "reconciler" / "demo.toml",
         *sorted((ROOT / "examples").glob("*.toml"))]
ENV = {"OPENWEBUI_API_KEY": "k", "OPENWEBUI_ADMIN_EMAIL": "a@b.c", "OPENWEBUI_ADMIN_PASSWORD": "p"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_shipped_file_is_valid(path: Path) -> None:
    load(path, env=ENV)


def test_examples_cover_the_networks_the_docs_promise() -> None:
    names = {p.name for p in FILES}
    assert {"seed.toml", "demo.toml", "offline-gguf.toml", "heterogeneous.toml"} <= names


def test_root_file_declares_the_seed_network() -> None:
    state = load(ROOT / "desired_state.toml", env=ENV)
    assert [n.name for n in state.nodes] == ["gpu-1", "gpu-2", "gpu-3"]
    assert all(n.url.endswith(":11434") for n in state.nodes)
    for node in state.nodes:
        assert state.models_on(node) == ["codestral:22b", "qwq:32b"]
    codestral = state.models["codestral:22b"].openwebui
    qwq = state.models["qwq:32b"].openwebui
    assert codestral is not None and qwq is not None
    assert codestral.params == {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1,
                                "top_p": 0.95, "repeat_penalty": 1.15}
    assert qwq.params == {"num_ctx": 14000, "num_predict": 13000}
    for entry in (codestral, qwq):
        assert entry.visibility == "public"
        assert entry.capabilities == {"vision": False, "citations": False}
    ow = state.openwebui
    assert ow is not None
    assert (ow.task_model, ow.code_interpreter, ow.default_user_role, ow.enable_signup) == \
        ("codestral:22b", False, "user", True)
    assert ow.code_execution is not None and (ow.code_execution.enabled, ow.code_execution.engine) == (True, "pyodide")
    assert ow.api_key == Secret("OPENWEBUI_API_KEY", "k")
    assert state.balancer_public_url() == "http://192.168.1.22:11434"


def test_defaults_and_durations() -> None:
    state = load_text('version = 1\n[balancer]\nsilence_timeout = "2m"\nqueue_timeout = "1500ms"\n'
                      '[reconcile]\ninterval = 90\n')
    assert state.balancer.silence_timeout == 120.0
    assert state.balancer.queue_timeout == 1.5
    assert state.reconcile.interval == 90.0
    assert state.reconcile.prune_models is False
    assert state.balancer_public_url() == "http://127.0.0.1:11434"


def test_secret_value_is_not_in_repr() -> None:
    state = load_text('version = 1\n[openwebui]\nurl = "http://127.0.0.1:3000"\napi_key = "${K}"\n', env={"K": "hunter2"})
    assert state.openwebui is not None and state.openwebui.api_key is not None
    assert state.openwebui.api_key.value == "hunter2"
    assert "hunter2" not in repr(state) and "hunter2" not in state.model_dump_json()


def test_gguf_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "net" / "desired_state.toml"
    file.parent.mkdir()
    file.write_text('version = 1\n[models."m:1"]\ngguf = "models/m.gguf"\n')
    state = load(file)
    assert state.resolve_path("models/m.gguf") == file.parent / "models" / "m.gguf"


def test_node_model_lists_narrow_the_models() -> None:
    state = load_text('version = 1\n[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:1"\n'
                      '[[nodes]]\nname = "b"\nurl = "http://127.0.0.1:2"\nmodels = ["x:1"]\n'
                      '[models."x:1"]\n[models."y:1"]\n[models."z:1"]\nnodes = ["a"]\n')
    assert state.models_on(state.nodes[0]) == ["x:1", "y:1", "z:1"]
    assert state.models_on(state.nodes[1]) == ["x:1"]
