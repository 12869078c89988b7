"""`ollafleet import` against simulated nodes and a real, hand-configured Open WebUI."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import httpx
import pytest
import tomli_w

from reconciler.config import load_text
from reconciler.plan import engine
from reconciler.targets import build_targets
from simulator import Timing
from tests.openwebui_harness import free_port
from tests.reconciler.importer.conftest import CLOCK, Imported, Network, cli_run, do_import, run_import


def test_import_validates_and_plans_no_change(network: Network, imported: Imported,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert imported.code == 0, imported.stderr
    assert cli_run(["validate", str(imported.path)], network.env, monkeypatch) == 0
    capsys.readouterr()
    code = cli_run(["plan", str(imported.path), "--detailed-exitcode"], network.env, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out + "\n" + imported.text
    assert "Nothing to change, but the network does not match the file. 1 warning(s) above" in out
    # the one thing people cannot use: the entry kept for a model no node holds any more
    [warning] = [line for line in out.splitlines() if line.startswith("warning")]
    assert 'models."llama3.1:8b": no Ollama connection of Open WebUI lists this model' in warning


def test_the_file_says_what_the_admin_set(network: Network, imported: Imported) -> None:
    data = tomllib.loads(imported.text)
    ow = data["openwebui"]
    assert ow["url"] == network.owui.url
    assert ow["api_key"] == "${OPENWEBUI_API_KEY}"
    assert network.env["OPENWEBUI_API_KEY"] not in imported.text + imported.stderr
    assert (ow["task_model"], ow["default_user_role"], ow["enable_signup"]) == ("codestral:22b", "user", True)
    assert ow["code_interpreter"] is False and ow["openai_api"] is False
    assert ow["code_execution"] == {"enabled": True, "engine": "pyodide"}
    assert "ollama_urls" not in ow
    assert data["balancer"]["public_url"] == network.lb.url      # Open WebUI's Ollama connection
    codestral = data["models"]["codestral:22b"]
    assert codestral["keep_loaded"] is True
    assert codestral["openwebui"] == {
        "visibility": "public", "capabilities": {"citations": False, "vision": False},
        "params": {"num_ctx": 30000, "num_predict": 29000, "repeat_penalty": 1.15, "temperature": 0.1,
                   "top_p": 0.95}}
    assert data["models"]["qwq:32b"]["openwebui"]["name"] == "QwQ 32B"
    assert data["models"]["qwq:32b"]["openwebui"]["params"] == {"num_ctx": 14000, "num_predict": 13000}


def test_an_entry_for_a_model_on_no_node_is_kept_on_no_node(imported: Imported) -> None:
    llama = tomllib.loads(imported.text)["models"]["llama3.1:8b"]
    assert llama == {"nodes": [], "openwebui": {"visibility": "public", "params": {"num_ctx": 8192}}}


def test_what_the_file_cannot_hold_is_said_not_dropped(imported: Imported) -> None:
    assert "code-helper" not in tomllib.loads(imported.text)["models"]
    for what in ("function_calling", "meta.tags", "code-helper"):
        assert what in imported.stderr
        comment = [line for line in imported.text.splitlines() if what in line]
        assert comment and all(line.startswith("#") for line in comment)


def test_nodes_that_differ_are_declared_per_node(imported: Imported) -> None:
    models = tomllib.loads(imported.text)["models"]
    assert "nodes" not in models["codestral:22b"]                 # on every node: declared once
    assert models["qwq:32b"]["nodes"] == ["gpu-1", "gpu-2"]
    assert models["nomic-embed-text:v1.5"]["nodes"] == ["gpu-3"]
    assert models["qwq-long:latest"]["nodes"] == ["gpu-1"]
    assert "keep_loaded" not in models["qwq:32b"]


def _show(url: str, model: str) -> dict[str, object]:
    return dict(httpx.post(url + "/api/show", json={"model": model}, timeout=10).json())


def test_a_derived_model_round_trips_with_its_parameters(network: Network, imported: Imported) -> None:
    derived = tomllib.loads(imported.text)["models"]["qwq-long:latest"]
    assert derived["from"] == "qwq:32b"
    assert derived["parameters"] == {"num_ctx": 32768, "temperature": 0.3}   # only the overrides
    assert derived["system"] == "Think briefly."
    assert "template" not in derived
    # the same declaration builds the same model on an empty node
    fresh = network.sim.add_node(name="fresh", timing=Timing.instant())
    body = {k: v for k, v in derived.items() if k != "nodes"}
    text = tomli_w.dumps({"version": 1, "nodes": [{"name": "fresh", "url": fresh.url}],
                          "models": {"qwq:32b": {}, "qwq-long:latest": body}})

    async def converge() -> None:
        targets = build_targets(load_text(text))
        try:
            report = await engine.apply(await engine.plan(targets), targets)
            assert report.ok, report.to_json()
        finally:
            await asyncio.gather(*(t.close() for t in targets))

    asyncio.run(converge())
    built, original = _show(fresh.url, "qwq-long"), _show(network.nodes["gpu-1"].url, "qwq-long")
    assert built["parameters"] == original["parameters"]
    assert built["system"] == original["system"] == "Think briefly."


def test_an_unreachable_node_is_reported_and_the_rest_written(network: Network, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "desired_state.toml"
    code, err = run_import([*network.node_args("gpu-1", "gpu-3"), "--node", f"gpu-9={dead}", "-o", str(out)], {})
    assert code == 1
    assert "gpu-9" in err and "unreachable" in err
    text = out.read_text()
    header = text.split("version = 1")[0]
    assert "INCOMPLETE" in header and "gpu-9" in header
    data = tomllib.loads(text)
    assert [n["name"] for n in data["nodes"]] == ["gpu-1", "gpu-3", "gpu-9"]
    assert next(n for n in data["nodes"] if n["name"] == "gpu-9")["models"] == []
    assert set(data["models"]) == {"codestral:22b", "qwq:32b", "qwq-long:latest", "nomic-embed-text:v1.5"}
    assert cli_run(["validate", str(out)], {}, monkeypatch) == 0


def test_an_unreachable_openwebui_is_reported_and_the_nodes_written(network: Network, tmp_path: Path) -> None:
    out = tmp_path / "desired_state.toml"
    dead = f"http://127.0.0.1:{free_port()}"
    code, err = run_import([*network.node_args("gpu-3"), "--openwebui", dead, "-o", str(out)],
                           {"OPENWEBUI_API_KEY": "sk-unused"})
    assert code == 1 and "Open WebUI" in err
    data = tomllib.loads(out.read_text())
    assert data["openwebui"] == {"url": dead, "api_key": "${OPENWEBUI_API_KEY}"}
    assert "INCOMPLETE" in out.read_text().split("version = 1")[0]
    load_text(out.read_text(), env={"OPENWEBUI_API_KEY": "x"})


def test_refuses_to_overwrite_without_force(network: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "desired_state.toml"
    out.write_text("# mine\n")
    code = cli_run(["import", *network.node_args("gpu-3"), "-o", str(out)], {}, monkeypatch)
    assert code == 2 and "--force" in capsys.readouterr().err
    assert out.read_text() == "# mine\n"
    code, _ = run_import([*network.node_args("gpu-3"), "-o", str(out), "--force"], {})
    assert code == 0 and "[[nodes]]" in out.read_text()


def test_importing_twice_gives_the_same_bytes(network: Network, imported: Imported, tmp_path: Path) -> None:
    again = do_import(network, tmp_path / "again.toml")
    assert again.path.read_bytes() == imported.path.read_bytes()
    assert f"{CLOCK:%Y-%m-%d %H:%M} UTC" in imported.text.splitlines()[0]
    assert network.owui.url in imported.text.split("version = 1")[0]


def test_admin_password_credentials_are_written_as_references(network: Network, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    env = {"OWUI_EMAIL": network.env["OWUI_EMAIL"], "OWUI_PASSWORD": network.env["OWUI_PASSWORD"]}
    out = tmp_path / "desired_state.toml"
    code, err = run_import([*network.node_args(), "--openwebui", network.owui.url, "-o", str(out),
                            "--admin-email-env", "OWUI_EMAIL", "--admin-password-env", "OWUI_PASSWORD"], env)
    assert code == 0, err
    ow = tomllib.loads(out.read_text())["openwebui"]
    assert (ow["admin_email"], ow["admin_password"]) == ("${OWUI_EMAIL}", "${OWUI_PASSWORD}")
    assert "api_key" not in ow and env["OWUI_PASSWORD"] not in out.read_text()
    monkeypatch.delenv("OPENWEBUI_API_KEY", raising=False)
    assert cli_run(["plan", str(out), "--detailed-exitcode"], env, monkeypatch) == 0, capsys.readouterr().out



def test_standard_output(network: Network, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(["import", *network.node_args("gpu-3"), "-o", "-"], {}, monkeypatch) == 0
    data = tomllib.loads(capsys.readouterr().out)
    assert set(data["models"]) == {"codestral:22b", "nomic-embed-text:v1.5"}
    assert data["models"]["codestral:22b"]["keep_loaded"] is True


def test_a_refused_api_key_is_named_by_its_variable_and_marks_the_file_incomplete(network: Network,
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "desired_state.toml"
    code, err = run_import([*network.node_args("gpu-3"), "--openwebui", network.owui.url, "-o", str(out)],
                           {"OPENWEBUI_API_KEY": "sk-not-the-key"})
    assert code == 1
    assert "${OPENWEBUI_API_KEY}" in err and "sk-not-the-key" not in err + out.read_text()
    assert "INCOMPLETE" in out.read_text().split("version = 1")[0]


def test_nodes_keep_the_command_line_order(network: Network, tmp_path: Path) -> None:
    # [[nodes]] order is the balancer's preference order: gpu-10 given after gpu-2 stays after it
    out = tmp_path / "desired_state.toml"
    argv = ["--node", f"gpu-2={network.nodes['gpu-2'].url}", "--node", f"gpu-10={network.nodes['gpu-1'].url}",
            "--node", f"gpu-3={network.nodes['gpu-3'].url}", "-o", str(out)]
    code, err = run_import(argv, {})
    assert code == 0, err
    text = out.read_text()
    assert [n["name"] for n in tomllib.loads(text)["nodes"]] == ["gpu-2", "gpu-10", "gpu-3"]
    header = text.split("version = 1")[0]
    assert header.index("node gpu-2") < header.index("node gpu-10") < header.index("node gpu-3")
