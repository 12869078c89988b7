"""`ollafleet import` on a node whose model came from a copied models folder."""

from __future__ import annotations

import asyncio
import contextlib
import io
import tomllib
from pathlib import Path

from reconciler import cli, importer
from reconciler.config import load
from reconciler.plan import engine
from reconciler.targets.ollama import node_targets
from simulator import SimulatorThread, Timing
from simulator.modelsdir import write_model

from .conftest import apply, desired, failures


def run_import(argv: list[str]) -> tuple[int, str]:
    args = cli.build_parser().parse_args(["import", *argv])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = importer.cmd_import(args, env={})
    return code, err.getvalue()


async def no_changes(path: Path) -> bool:
    targets = node_targets(load(path, env={}), timeout=1.0, stream_timeout=2.0)
    try:
        return (await engine.plan(targets)).changes == ()
    finally:
        for t in targets:
            await t.close()


def test_a_folder_model_is_imported_as_ollama_dir_when_the_folder_is_given(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "usb" / "models", "qwq:32b", template="{{ .Prompt }}", system="Think.",
                         params={"temperature": 0.6, "stop": ["<|im_end|>"]}, licenses=("Apache 2.0\n",))
    with SimulatorThread() as sim:
        node = sim.add_node(name="gpu-1", port=0, timing=Timing.instant())
        state = desired([node], '[models."qwq:32b"]\nollama_dir = "usb/models"\nparameters = { num_ctx = 16384 }\n')
        assert failures(asyncio.run(apply(state, base_dir=tmp_path))) == []
        args = ["--node", f"gpu-1={node.url}", "-o"]

        code, err = run_import([*args, str(tmp_path / "with.toml"), "--ollama-dir", str(folder.root)])
        assert code == 0, err
        model = tomllib.loads((tmp_path / "with.toml").read_text())["models"]["qwq:32b"]
        assert model == {"ollama_dir": str(folder.root.resolve()), "parameters": {"num_ctx": 16384}}
        assert asyncio.run(no_changes(tmp_path / "with.toml"))

        code, err = run_import([*args, str(tmp_path / "without.toml")])
        assert code == 0, err
        assert tomllib.loads((tmp_path / "without.toml").read_text())["models"]["qwq:32b"] == {}
        assert "ollama_dir" in err and "--ollama-dir" in err
