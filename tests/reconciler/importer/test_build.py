"""The pure part of import, as tables: what was read → what the file says and what it warns."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.config import load_text
from reconciler.importer import render
from reconciler.importer.build import Document, build
from reconciler.importer.read import NodeRead, OpenWebUIRead
from reconciler.targets.ollama.facts import PsEntry, ShowInfo, TagEntry
from reconciler.targets.ollama.diff import NodeView
from reconciler.targets.openwebui.diff import Seen

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
FOREVER = NOW + timedelta(days=292 * 365)
BASE = ShowInfo({"temperature": 0.6, "stop": ["<|im_end|>"]}, "{{ .Prompt }}", "")


def node(name: str, shows: dict[str, ShowInfo], pinned: tuple[str, ...] = (), loaded: tuple[str, ...] = ()) -> NodeRead:
    tags = tuple(TagEntry(n, f"{i:064x}") for i, n in enumerate(shows))
    ps = tuple(PsEntry(n, "", FOREVER) for n in pinned) + tuple(PsEntry(n, "", NOW + timedelta(minutes=5))
                                                                for n in loaded)
    return NodeRead(name, f"http://127.0.0.1:{1000 + int(name[-1])}", NodeView("0.13.5", tags, ps, now=NOW),
                    dict(shows))


def models_of(doc: Document) -> dict[str, dict[str, Any]]:
    return {s.name: s.body for s in doc.models}


def text_of(doc: Document) -> str:
    text = render(doc, when=NOW, sources=["test"])
    load_text(text, skip_env=True)          # every file import writes must validate
    return text


def test_keep_loaded_only_when_pinned_on_every_node_that_holds_the_model() -> None:
    reads = [node("gpu-1", {"a:1": BASE, "b:1": BASE}, pinned=("a:1", "b:1")),
             node("gpu-2", {"a:1": BASE, "b:1": BASE}, pinned=("a:1",), loaded=("b:1",))]
    doc = build(reads, None, {})
    assert models_of(doc) == {"a:1": {"keep_loaded": True}, "b:1": {}}
    assert any("b:1 is kept loaded on gpu-1 only" in w for w in doc.warnings)
    assert "# b:1 is kept loaded on gpu-1 only" in text_of(doc)


def test_only_the_overrides_of_a_derived_model_are_written() -> None:
    derived = ShowInfo({"temperature": 0.6, "stop": ["<|im_end|>"], "num_ctx": 32768.0}, "{{ .Prompt }}",
                       "Be brief.", parent_model="base:1")
    doc = build([node("gpu-1", {"base:1": BASE, "long:latest": derived})], None, {})
    assert models_of(doc)["long:latest"] == {"from": "base:1", "parameters": {"num_ctx": 32768},
                                            "system": "Be brief."}
    assert [s.name for s in doc.models] == ["base:1", "long:latest"]
    assert isinstance(tomllib.loads(text_of(doc))["models"]["long:latest"]["parameters"]["num_ctx"], int)


def test_system_and_template_with_newlines_and_quotes_read_back_exactly() -> None:
    template = '{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n"quoted" \\ back\tslash\n'
    derived = ShowInfo(dict(BASE.parameters), template, "Line one.\nLine \"two\".", parent_model="base:1")
    doc = build([node("gpu-1", {"base:1": BASE, "t:1": derived})], None, {})
    model = tomllib.loads(text_of(doc))["models"]["t:1"]
    assert (model["template"], model["system"]) == (template, "Line one.\nLine \"two\".")
    assert "parameters" not in model


def test_a_parameter_the_derived_model_dropped_is_warned_about() -> None:
    derived = ShowInfo({"stop": ["<|im_end|>"]}, "{{ .Prompt }}", "", parent_model="base:1")
    doc = build([node("gpu-1", {"base:1": BASE, "d:1": derived})], None, {})
    assert any("drops its base's parameter temperature" in w for w in doc.warnings)


def test_a_model_built_from_a_file_is_declared_plainly_with_a_warning() -> None:
    gguf = ShowInfo({"num_ctx": 8192}, parent_model="/root/.ollama/models/blobs/sha256-" + "1" * 64)
    doc = build([node("gpu-1", {"mine:latest": gguf})], None, {})
    assert models_of(doc) == {"mine:latest": {}}
    assert any("GGUF" in w for w in doc.warnings)
    text_of(doc)


def test_nodes_that_build_a_model_differently_are_named_and_the_file_stays_valid() -> None:
    derived = ShowInfo({"temperature": 0.2, "stop": ["<|im_end|>"]}, "{{ .Prompt }}", "", parent_model="base:1")
    plain = ShowInfo({"temperature": 0.9})
    stops = ShowInfo({"temperature": 0.6, "stop": ["</s>", "<|im_end|>"]}, "{{ .Prompt }}", "", parent_model="base:1")
    reads = [node("gpu-1", {"base:1": BASE, "x:1": derived}), node("gpu-2", {"base:1": BASE, "x:1": derived}),
             node("gpu-3", {"base:1": BASE, "x:1": plain}), node("gpu-4", {"base:1": BASE, "x:1": stops})]
    doc = build(reads, None, {})
    assert models_of(doc)["x:1"] == {"from": "base:1", "parameters": {"temperature": 0.2}}
    assert any("built differently on gpu-3, gpu-4 than on gpu-1" in w for w in doc.warnings)
    text_of(doc)
    alone = build([node("gpu-4", {"base:1": BASE, "x:1": stops})], None, {})
    assert models_of(alone)["x:1"]["parameters"] == {"stop": ["</s>", "<|im_end|>"]}
    assert 'parameters = { stop = ["</s>", "<|im_end|>"] }' in text_of(alone)
    # the derived model is on gpu-3 too, which lacks the base: the file cannot say `from` there
    reads = [node("gpu-1", {"base:1": BASE, "x:1": derived}), node("gpu-3", {"x:1": derived})]
    doc = build(reads, None, {})
    assert models_of(doc)["x:1"] == {}
    assert any("which gpu-3 lacks" in w for w in doc.warnings)
    text_of(doc)


def _owui(entries: dict[str, dict[str, Any]], **groups: dict[str, Any]) -> OpenWebUIRead:
    base = {"auth": {"DEFAULT_USER_ROLE": "pending", "ENABLE_SIGNUP": False, "ENABLE_API_KEYS": True},
            "task": {"TASK_MODEL": ""}, "code": {"ENABLE_CODE_INTERPRETER": True, "ENABLE_CODE_EXECUTION": True,
                                                 "CODE_EXECUTION_ENGINE": "pyodide"},
            "ollama": {"ENABLE_OLLAMA_API": True, "OLLAMA_BASE_URLS": ["http://127.0.0.1:11434"]},
            "openai": {"ENABLE_OPENAI_API": False}}
    for name, values in groups.items():
        base[name] = {**base[name], **values}
    return OpenWebUIRead("http://127.0.0.1:3000", Seen("0.12.4", False, base), entries)


CREDS = {"api_key": "${OPENWEBUI_API_KEY}"}


def test_openwebui_params_map_back_to_ollama_names_and_the_rest_is_warned_about() -> None:
    entry = {"name": "a:1", "meta": {"capabilities": {"vision": False, "citations": True}, "tags": [{"name": "x"}]},
             "params": {"max_tokens": 100, "num_ctx": 4096.0, "num_predict": 5, "seed": None, "system": "Hi.",
                        "custom_param": 1},
             "access_grants": [{"principal_type": "group", "principal_id": "g1", "permission": "read"}],
             "is_active": False}
    doc = build([node("gpu-1", {"a:1": BASE})], _owui({"a:1": entry}), CREDS)
    section = doc.models[0]
    assert section.openwebui == {"visibility": "private", "capabilities": {"vision": False},
                                 "params": {"num_ctx": 4096, "num_predict": 100}, "system": "Hi."}
    said = "\n".join(doc.warnings)
    for what in ("param num_predict = 5", "custom_param", "meta.tags", "shared with 1 group", "turned off"):
        assert what in said
    text_of(doc)


def test_openwebui_connection_and_settings() -> None:
    doc = build([node("gpu-1", {"a:1": BASE})], _owui({}, task={"TASK_MODEL": "gone:1"},
                                                      ollama={"ENABLE_OLLAMA_API": False,
                                                              "OLLAMA_BASE_URLS": ["http://127.0.0.1:1001/"]}),
                CREDS)
    assert doc.balancer["public_url"] == "http://127.0.0.1:1001"
    assert doc.openwebui is not None and "task_model" not in doc.openwebui
    assert doc.openwebui["default_user_role"] == "pending" and doc.openwebui["enable_signup"] is False
    said = "\n".join(doc.warnings)
    assert "gone:1" in said and "Ollama API is turned off" in said
    assert any("talks to node gpu-1 directly" in c for c in doc.openwebui_comments)
    two = build([], _owui({}, ollama={"OLLAMA_BASE_URLS": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}), CREDS)
    assert two.openwebui is not None and two.openwebui["ollama_urls"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert "public_url" not in two.balancer
    text_of(two)


def test_an_entry_for_a_model_no_node_holds_is_kept_on_no_node() -> None:
    entry = {"name": "old:1", "meta": {}, "params": {}, "access_grants": []}
    doc = build([node("gpu-1", {"a:1": BASE})], _owui({"old:1": entry}), CREDS)
    assert models_of(doc)["old:1"] == {"nodes": []}
    text_of(doc)


def test_secrets_and_unreadable_servers() -> None:
    broken = NodeRead("gpu-2", "http://127.0.0.1:1002", error="unreachable: nope")
    ow = OpenWebUIRead("http://127.0.0.1:3000", error="refused the API key in ${OPENWEBUI_API_KEY}")
    doc = build([node("gpu-1", {"a:1": BASE}), broken], ow, CREDS)
    text = text_of(doc)
    header = text.split("version = 1")[0]
    assert "INCOMPLETE" in header and "gpu-2" in header and "Open WebUI" in header
    data = tomllib.loads(text)
    assert data["openwebui"] == {"url": "http://127.0.0.1:3000", "api_key": "${OPENWEBUI_API_KEY}"}
    assert data["nodes"][1] == {"name": "gpu-2", "url": "http://127.0.0.1:1002", "models": []}
    assert data["models"] == {"a:1": {}}


def test_the_model_ollafleet_builds_for_v1_is_left_out() -> None:
    v1 = ShowInfo({**BASE.parameters, "num_ctx": 30000.0}, "{{ .Prompt }}", "", parent_model="base:1")
    doc = build([node("gpu-1", {"base:1": BASE, "base:1-v1": v1}, pinned=("base:1",))], None, {})
    assert models_of(doc) == {"base:1": {"keep_loaded": True}}
    assert any("base:1-v1 is the model ollafleet builds for /v1 requests to base:1; left out" in w
               for w in doc.warnings)
    assert 'apply_model_params = "off"' in text_of(doc)


def test_an_untagged_entry_and_its_listed_model_are_one_model_in_the_file() -> None:
    """Nodes list "c30k:latest"; Open WebUI holds an entry under "c30k" (as older ollafleet wrote
    it) and one under "c30k:latest": one section, under the listed name, with the listed entry."""
    listed = {"name": "c30k:latest", "meta": {}, "params": {"num_ctx": 30000}, "access_grants": []}
    stray = {"name": "c30k", "meta": {}, "params": {"num_ctx": 2048}, "access_grants": []}
    reads = [node("gpu-1", {"base:1": BASE, "c30k:latest": BASE})]
    doc = build(reads, _owui({"c30k": stray, "c30k:latest": listed}, task={"TASK_MODEL": "C30K"}), CREDS)
    assert [s.name for s in doc.models] == ["base:1", "c30k:latest"]
    assert doc.models[1].openwebui == {"visibility": "private", "params": {"num_ctx": 30000}}
    assert doc.openwebui is not None and doc.openwebui["task_model"] == "c30k:latest"
    assert any('entry under "c30k", an id no Ollama connection lists' in w for w in doc.warnings)
    text_of(doc)                                          # validates: one name per model
    alone = build(reads, _owui({"c30k": stray}), CREDS)   # only the stray: its settings are kept
    assert alone.models[1].openwebui == {"name": "c30k", "visibility": "private", "params": {"num_ctx": 2048}}
    text_of(alone)


def test_the_balancer_of_a_running_daemon_is_imported_as_it_runs() -> None:
    running = {"listen": "127.0.0.1:11434", "silence_timeout": "2m", "queue_timeout": "10m",
               "apply_model_params": "fill"}
    doc = build([node("gpu-1", {"a:1": BASE})], None, {}, running=running)
    assert doc.balancer == running
    assert tomllib.loads(text_of(doc))["balancer"]["apply_model_params"] == "fill"
