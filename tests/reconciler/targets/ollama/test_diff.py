"""The diff of one node as tables: desired + observed → the changes a user would see in the plan."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.config import load_text
from reconciler.plan.changes import Action
from reconciler.targets.ollama.facts import PsEntry, ShowInfo, TagEntry
from reconciler.targets.ollama.diff import NodeView, Wanted, WantedModel, diff_node, needs_show, wanted_for

T = "ollama/gpu-1"
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)
FOREVER = NOW + timedelta(days=365 * 292)
D1, D2 = "1" * 64, "2" * 64
BASE_PARAMS = {"stop": ["[INST]", "[/INST]"]}

CODESTRAL = WantedModel("codestral:22b")
DERIVED = WantedModel("codestral-30k", "from", base="codestral:22b",
                      parameters={"num_ctx": 30000, "temperature": 0.1})


def view(*names: str, shows: dict[str, ShowInfo | None] | None = None, loaded: tuple[PsEntry, ...] = ()) -> NodeView:
    return NodeView("0.13.5", tuple(TagEntry(n, D1) for n in names), loaded, shows or {}, NOW)


def base_show() -> ShowInfo:
    return ShowInfo(dict(BASE_PARAMS), "tmpl", "", "", ("completion",), "w" * 64)


def derived_show(**params: object) -> ShowInfo:
    return ShowInfo({**BASE_PARAMS, **params}, "tmpl", "", "codestral:22b", ("completion",), "w" * 64)


def plan(models: tuple[WantedModel, ...], seen: NodeView, prune: bool = False) -> list[tuple[str, str, object, object]]:
    changes, _ = diff_node(T, Wanted("gpu-1", models, prune), seen)
    return [(c.action.value, c.path_text, c.before, c.after) for c in changes]


CASES = {
    "fresh node: pull, then create from it": (
        (CODESTRAL, DERIVED), view(),
        [("create", 'models."codestral:22b"', None, "codestral:22b"),
         ("create", "models.codestral-30k", None, {"from": "codestral:22b",
                                                   "parameters": {"num_ctx": 30000, "temperature": 0.1}})]),
    "converged: no change (1e+06-style floats compare as numbers)": (
        (CODESTRAL, DERIVED),
        view("codestral:22b", "codestral-30k:latest", shows={
            "codestral:22b": base_show(), "codestral-30k:latest": derived_show(num_ctx=30000.0, temperature=0.1)}),
        []),
    "case and :latest do not matter": ((WantedModel("QWQ"),), view("qwq:latest"), []),
    "changed parameter: update that key": (
        (CODESTRAL, DERIVED),
        view("codestral:22b", "codestral-30k:latest", shows={
            "codestral:22b": base_show(), "codestral-30k:latest": derived_show(num_ctx=4096, temperature=0.1)}),
        [("update", "models.codestral-30k.parameters.num_ctx", 4096, 30000)]),
    "override dropped from the file: removed by a re-create": (
        (CODESTRAL, DERIVED),
        view("codestral:22b", "codestral-30k:latest", shows={
            "codestral:22b": base_show(),
            "codestral-30k:latest": derived_show(num_ctx=30000, temperature=0.1, top_k=10)}),
        [("update", "models.codestral-30k.parameters.top_k", 10, None)]),
    "wrong base: replace": (
        (CODESTRAL, DERIVED),
        view("codestral:22b", "codestral-30k:latest", shows={
            "codestral:22b": base_show(),
            "codestral-30k:latest": ShowInfo({**BASE_PARAMS, "num_ctx": 30000, "temperature": 0.1}, "tmpl", "",
                                             "qwq:32b")}),
        [("replace", "models.codestral-30k.from", "qwq:32b", "codestral:22b")]),
    "pinned digest differs: pull again": (
        (WantedModel("qwq:32b", digest=D2),), view("qwq:32b"),
        [("replace", 'models."qwq:32b".digest', D1, D2)]),
    "pinned digest matches": ((WantedModel("qwq:32b", digest=D1),), view("qwq:32b"), []),
    "mirror: pull the mirror name": (
        (WantedModel("qwq:32b", pull="mirror:5000/library/qwq:32b", insecure=True),), view(),
        [("create", 'models."qwq:32b"', None, "mirror:5000/library/qwq:32b")]),
    "unlisted model kept without prune": ((CODESTRAL,), view("codestral:22b", "old:7b"), []),
}


@pytest.mark.parametrize("name", CASES)
def test_diff_table(name: str) -> None:
    models, seen, expected = CASES[name]
    assert plan(models, seen) == expected


def test_prune_deletes_only_unlisted() -> None:
    assert plan((CODESTRAL,), view("codestral:22b", "old:7b", "Codestral:22B"), prune=True) == [
        ("delete", 'models."old:7b"', "old:7b", None)]


def test_derived_waits_for_its_base_even_when_declared_first() -> None:
    changes, _ = diff_node(T, Wanted("gpu-1", (DERIVED, CODESTRAL)), view())
    pull, create = changes
    assert pull.path_text == 'models."codestral:22b"' and create.requires == (pull.key,)


@pytest.mark.parametrize("loaded", [(), (PsEntry("qwq:32b", D2, NOW + timedelta(minutes=5)),),
                                    (PsEntry("codestral:22b", D1, NOW + timedelta(minutes=5)),)])
def test_keep_loaded_is_never_a_change_whatever_traffic_loaded(loaded: tuple[PsEntry, ...]) -> None:
    """People's requests evict and load models: that is not drift, and re-pinning is the balancer's."""
    w = WantedModel("codestral:22b", keep_loaded=True)
    changes, _ = diff_node(T, Wanted("gpu-1", (w,)), view())
    assert [c.path_text for c in changes] == ['models."codestral:22b"']
    changes, notes = diff_node(T, Wanted("gpu-1", (w,)), view("codestral:22b", "qwq:32b", loaded=loaded))
    assert changes == [] and not any(n.startswith("WARNING") for n in notes)


def sized(*models: tuple[str, float]) -> NodeView:
    return NodeView("0.13.5", tuple(TagEntry(n, D1, int(gb * 1e9)) for n, gb in models), (), {}, NOW)


def test_pins_that_cannot_all_be_resident_are_warned_about() -> None:
    pins = (WantedModel("codestral:22b", keep_loaded=True), WantedModel("qwq:32b", keep_loaded=True))
    seen = sized(("codestral:22b", 12.6), ("qwq:32b", 19.9))
    _, notes = diff_node(T, Wanted("gpu-1", pins), seen)
    [warning] = [n for n in notes if n.startswith("WARNING")]
    assert "gpu-1" in warning and "codestral:22b 12.6 GB, qwq:32b 19.9 GB" in warning and "32.5 GB" in warning
    assert "assumed" in warning
    _, notes = diff_node(T, Wanted("gpu-1", pins, gpu_memory=48_000_000_000), seen)    # a 48 GB node: fits
    assert not any(n.startswith("WARNING") for n in notes)
    _, notes = diff_node(T, Wanted("gpu-1", pins[:1]), seen)                            # one pin: fits
    assert not any(n.startswith("WARNING") for n in notes)



def test_notes_name_version_missing_and_unlisted() -> None:
    _, notes = diff_node(T, Wanted("gpu-1", (CODESTRAL, WantedModel("qwq:32b"))), view("codestral:22b", "old:7b"))
    assert notes[0].startswith("Ollama 0.13.5; 1 of 2 models present; missing: qwq:32b")
    assert any("prune_models is off: old:7b" in n for n in notes)


def test_needs_show_only_what_is_compared() -> None:
    seen = view("codestral:22b", "codestral-30k:latest", "qwq:32b")
    assert needs_show(Wanted("gpu-1", (CODESTRAL, DERIVED, WantedModel("qwq:32b"))), seen) == [
        "codestral-30k:latest", "codestral:22b"]


def test_wanted_for_projects_the_file_onto_a_node(tmp_path: Path) -> None:
    state = load_text("""
version = 1
[[nodes]]
name = "a"
url = "http://127.0.0.1:1"
[[nodes]]
name = "b"
url = "http://127.0.0.1:2"
models = ["m:1"]
[models."m:1"]
gguf = "m.gguf"
parameters = { num_ctx = 8192 }
[models."q:2"]
pull = "mirror:5000/library/q:2"
insecure = true
digest = "sha256:""" + D1 + """"
keep_loaded = true
""")
    a = wanted_for(state, state.nodes[0], tmp_path)
    assert [w.name for w in a.models] == ["m:1", "q:2"]
    m, q = a.models
    assert m.source == "gguf" and m.gguf == tmp_path / "m.gguf" and m.parameters == {"num_ctx": 8192}
    assert (q.pull, q.insecure, q.digest, q.keep_loaded) == ("mirror:5000/library/q:2", True, D1, True)
    assert [w.name for w in wanted_for(state, state.nodes[1]).models] == ["m:1"]


def test_prune_comes_first_to_free_disk_space() -> None:
    assert [c[:2] for c in plan((CODESTRAL,), view("old:7b"), prune=True)] == [
        ("delete", 'models."old:7b"'), ("create", 'models."codestral:22b"')]


@pytest.mark.parametrize("version, changed", [("0.13.5", True), ("0.30.1", False)])
def test_replaced_gguf_file_is_recreated_where_the_digest_tells(version: str, changed: bool) -> None:
    w = WantedModel("tiny:1b", "gguf", gguf=Path("tiny.gguf"))
    seen = NodeView(version, (TagEntry("tiny:1b", D1),), (), {"tiny:1b": ShowInfo(weights="a" * 64)}, NOW,
                    files={"tiny:1b": "b" * 64})
    expected = [("replace", 'models."tiny:1b".gguf', "sha256:" + "a" * 64, "sha256:" + "b" * 64)] if changed else []
    changes, _ = diff_node(T, Wanted("gpu-1", (w,)), seen)
    assert [(c.action.value, c.path_text, c.before, c.after) for c in changes] == expected
