"""What the daemon hands the balancer's warmer: per node, the keep_loaded models that belong
there (node `models` unset or listing it, model `nodes` unset or naming the node)."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import load
from reconciler.daemon.wiring import balancer_nodes

FILE = '''
version = 1
[[nodes]]
name = "gpu-1"
url = "http://127.0.0.1:1"
[[nodes]]
name = "gpu-2"
url = "http://127.0.0.1:2"
models = ["qwq:32b", "llama3"]
[[nodes]]
name = "gpu-3"
url = "http://127.0.0.1:3"
[models."codestral:22b"]
keep_loaded = true
[models."qwq:32b"]
[models."llama3"]
keep_loaded = true
nodes = ["gpu-2"]
'''


def test_each_node_gets_the_pinned_models_that_belong_on_it(tmp_path: Path) -> None:
    path = tmp_path / "desired_state.toml"
    path.write_text(FILE)
    pins = {n.name: n.pinned for n in balancer_nodes(load(path, skip_env=True))}
    assert pins == {"gpu-1": ("codestral:22b",), "gpu-2": ("llama3:latest",),
                    "gpu-3": ("codestral:22b",)}
