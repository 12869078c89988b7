"""Against simulated nodes: fresh nodes converge, a second apply writes nothing, drift is repaired."""

from __future__ import annotations

from typing import Any

from reconciler.targets.ollama.client import OllamaClient

from .conftest import add_nodes, apply, desired, failures, plan

MODELS = """
[models."codestral:22b"]
keep_loaded = true

[models."qwq:32b"]

[models."codestral-30k"]
from = "codestral:22b"
parameters = { num_ctx = 30000, num_predict = 29000, temperature = 0.1, top_p = 0.95, repeat_penalty = 1.15 }
"""


class Recorder:
    def __init__(self) -> None:
        self.updates: dict[str, list[tuple[float, float | None]]] = {}
        self.finished: dict[str, str] = {}

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        self.updates.setdefault(task, []).append((completed, total))

    def done(self, task: str, status: str = "") -> None:
        self.finished[task] = status


async def shown_params(node: Any, model: str) -> dict[str, Any]:
    client = OllamaClient(node.url)
    try:
        info = await client.show(model)
        assert info is not None
        return info.parameters
    finally:
        await client.close()


async def test_fresh_nodes_converge_then_a_second_apply_sends_no_write(sim: Any) -> None:
    nodes = await add_nodes(sim, 3)
    state = desired(nodes, MODELS, node_models={"gpu-3": ["codestral:22b", "codestral-30k"]})
    progress = Recorder()
    report = await apply(state, progress)
    assert failures(report) == []
    assert len(report.results) == 3 + 2 + 3    # pulls and creates; loading is the balancer's
    for node in nodes:
        want = {"codestral:22b", "codestral-30k:latest"} | ({"qwq:32b"} if node.name != "gpu-3" else set())
        assert set(node.installed_models()) == want
        assert node.loaded_models() == []
    assert progress.finished["gpu-1 pull qwq:32b"] == "pulled"
    completed, total = progress.updates["gpu-1 pull qwq:32b"][-1]
    assert total and total > 19e9 and completed == total
    params = await shown_params(nodes[0], "codestral-30k")
    assert params["num_ctx"] == 30000 and params["temperature"] == 0.1 and params["stop"] == ["[INST]", "[/INST]"]

    for node in nodes:
        node.clear_requests()
    again = await plan(state)
    assert again.changes == () and again.exit_code(detailed=True) == 0
    report = await apply(state)
    assert report.results == () and failures(report) == []
    assert [r for n in nodes for r in n.write_requests()] == []


async def test_changed_parameters_are_recreated_once_and_show_matches(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    node.install("codestral:22b")
    node.install("codestral-30k", from_="codestral:22b", parameters={"num_ctx": 4096, "temperature": 0.7, "top_k": 5})
    state = desired([node], MODELS.replace("keep_loaded = true", ""), node_models={"gpu-1": ["codestral:22b", "codestral-30k"]})
    the_plan = await plan(state)
    paths = sorted(c.path_text for c in the_plan.changes)
    assert paths == [f"models.codestral-30k.parameters.{k}" for k in
                     ("num_ctx", "num_predict", "repeat_penalty", "temperature", "top_k", "top_p")]
    node.clear_requests()
    report = await apply(state)
    assert failures(report) == []
    assert [r.path for r in node.write_requests()] == ["/api/create"]
    params = await shown_params(node, "codestral-30k")
    assert params == {"stop": ["[INST]", "[/INST]"], "num_ctx": 30000, "num_predict": 29000, "temperature": 0.1,
                      "top_p": 0.95, "repeat_penalty": 1.15}
    assert (await plan(state)).changes == ()


async def test_prune_deletes_only_unlisted_models_and_never_when_off(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    for name in ("codestral:22b", "llama3.2:1b", "qwq:32b"):
        node.install(name)
    models = '[models."codestral:22b"]\n[models."qwq:32b"]\n'
    off = desired([node], models)
    the_plan = await plan(off)
    assert the_plan.changes == ()
    assert any("prune_models is off: llama3.2:1b" in n.message for n in the_plan.notes)
    await apply(off)
    assert "llama3.2:1b" in node.installed_models()

    report = await apply(desired([node], models, prune=True))
    assert [(r.change.action.value, r.change.path_text) for r in report.results] == [("delete", 'models."llama3.2:1b"')]
    assert sorted(node.installed_models()) == ["codestral:22b", "qwq:32b"]


async def test_private_mirror_is_pulled_insecure_and_served_under_the_declared_name(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], '[models."qwq:32b"]\npull = "mirror.lab:5000/library/qwq:32b"\ninsecure = true\n')
    report = await apply(state)
    assert failures(report) == []
    pulls = [r.body for r in node.write_requests() if r.path == "/api/pull"]
    assert pulls == [{"model": "mirror.lab:5000/library/qwq:32b", "stream": True, "insecure": True}]
    assert node.installed_models() == ["qwq:32b"]
    assert (await plan(state)).changes == ()


async def test_pinned_digest_mismatch_is_pulled_again_then_reported(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    node.install("qwq:32b")
    state = desired([node], '[models."qwq:32b"]\ndigest = "' + "ab" * 32 + '"\n')
    [change] = (await plan(state)).changes
    assert change.path_text == 'models."qwq:32b".digest' and change.after == "ab" * 32
    report = await apply(state)
    assert [r.path for r in node.write_requests()] == ["/api/pull"]
    [failed] = report.failed
    assert "the registry serves digest" in failed.message and "ab" * 32 in failed.message


async def test_keep_loaded_never_makes_a_pass_load_a_model(sim: Any) -> None:
    """A pass that waited on a load would wait behind people's generations: it pulls only."""
    [node] = await add_nodes(sim, 1)
    state = desired([node], '[models."nomic-embed-text:v1.5"]\nkeep_loaded = true\n')
    report = await apply(state)
    assert failures(report) == []
    assert [r.path for r in node.write_requests()] == ["/api/pull"]
    assert node.loaded_models() == []
    assert (await plan(state)).changes == ()


async def test_system_and_template_round_trip_without_drift(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    models = ('[models."llama3.2:1b"]\n[models.helper]\nfrom = "llama3.2:1b"\nsystem = "Answer in one line.\\nBe kind."\n'
              'template = "{{ .System }} {{ .Prompt }}"\nparameters = { stop = ["<|eot_id|>"], seed = 42 }\n')
    state = desired([node], models)
    assert failures(await apply(state)) == []
    assert (await plan(state)).changes == ()
    changed = desired([node], models.replace("Be kind.", "Be brief."))
    [change] = (await plan(changed)).changes
    assert change.path_text == "models.helper.system" and change.after == "Answer in one line.\nBe brief."
    assert failures(await apply(changed)) == [] and (await plan(changed)).changes == ()


async def test_base_and_derived_sharing_one_runner_are_both_loaded(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    models = MODELS.replace("[models.\"qwq:32b\"]\n", "") + "keep_loaded = true\n"
    state = desired([node], models)
    assert failures(await apply(state)) == []
    node.clear_requests()
    assert (await plan(state)).changes == ()       # one runner serves both: no reload ping-pong
    assert node.write_requests() == []


async def test_one_pull_at_a_time_per_node_by_default(sim: Any) -> None:
    nodes = await add_nodes(sim, 2)
    active: dict[str, set[str]] = {}
    most: dict[str, int] = {}

    class Watch(Recorder):
        def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
            node = task.split()[0]
            active.setdefault(node, set()).add(task)
            most[node] = max(most.get(node, 0), len(active[node]))

        def done(self, task: str, status: str = "") -> None:
            active[task.split()[0]].discard(task)

    state = desired(nodes, '[models."qwq:32b"]\n[models."llama3.2:1b"]\n[models."codestral:22b"]\n')
    assert failures(await apply(state, Watch())) == []
    assert most == {"gpu-1": 1, "gpu-2": 1}
