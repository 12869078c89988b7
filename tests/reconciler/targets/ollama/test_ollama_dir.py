"""A copied Ollama models folder (`ollama_dir`): verified, uploaded where missing, created as the original."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.targets.ollama import folder as ollama_dir
from reconciler.targets.ollama.client import OllamaClient
from reconciler.targets.ollama.facts import parse_show_parameters
from simulator.catalogue import MT_PROJECTOR
from simulator.modelsdir import MT_ADAPTER, ModelsFolder, corrupt, truncate, write_model

from .conftest import add_nodes, apply, desired, failures, plan

TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
PARAMS = {"temperature": 0.6, "top_k": 40, "stop": ["<|im_start|>", "<|im_end|>"], "num_ctx": 8192}
MESSAGES = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A tiny test model."}]


def model_toml(folder: str = "models", extra: str = "") -> str:
    return f'[models."qwq:32b"]\nollama_dir = "{folder}"\n{extra}'


@pytest.fixture
def folder(tmp_path: Path) -> ModelsFolder:
    return write_model(tmp_path / "models", "qwq:32b", architecture="qwen2", weights_size=300_000,
                       projector_size=50_000, adapter_sizes=(20_000,), template=TEMPLATE,
                       system="You are QwQ.", params=PARAMS, licenses=("Apache License 2.0\n", "Extra terms\n"),
                       messages=MESSAGES)


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, float, float | None, str]] = []
        self.finished: list[tuple[str, str]] = []

    def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
        self.updates.append((task, completed, total, status))

    def done(self, task: str, status: str = "") -> None:
        self.finished.append((task, status))


async def shown(node: Any, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{node.url}/api/show", json={"model": name})
        assert r.status_code == 200, r.text
        return dict(r.json())


def blob_posts(node: Any) -> list[str]:
    return [r.path.removeprefix("/api/blobs/") for r in node.write_requests() if r.path.startswith("/api/blobs/")]


async def test_a_folder_is_applied_to_three_nodes_as_the_original_then_nothing_to_do(
        sim: Any, folder: ModelsFolder) -> None:
    fresh1, partly, fresh2 = await add_nodes(sim, 3)
    async with httpx.AsyncClient() as http:           # gpu-2 got the weights earlier
        w = folder.weights
        r = await http.post(f"{partly.url}/api/blobs/{w.digest}", content=folder.blob_path(w).read_bytes())
        assert r.status_code == 201
    partly.clear_requests()
    state = desired([fresh1, partly, fresh2], model_toml())
    progress = Recorder()
    report = await apply(state, progress, base_dir=folder.root.parent)
    assert failures(report) == []

    big = [x.digest for x in folder.layers if x.media_type not in folder.texts and x.size >= 20_000]
    assert sorted(blob_posts(fresh1)) == sorted(big) == sorted(blob_posts(fresh2))
    assert sorted(blob_posts(partly)) == sorted(d for d in big if d != folder.weights.digest)
    for node in (fresh1, partly, fresh2):
        assert node.installed_models() == ["qwq:32b"]
        show = await shown(node, "qwq:32b")
        assert show["template"] == TEMPLATE and show["system"] == "You are QwQ."
        assert parse_show_parameters(show["parameters"]) == PARAMS
        assert show["license"] == "Apache License 2.0\n\nExtra terms\n"
        assert show["messages"] == MESSAGES
        assert "vision" in show["capabilities"]                  # the projector came along
        assert show["details"]["family"] == "qwen2"
        assert f"sha256-{folder.weights.digest[7:]}" in show["modelfile"]
        create = next(r.body for r in node.write_requests() if r.path == "/api/create")
        assert sorted(create["files"].values()) == sorted(
            x.digest for x in [folder.weights, *folder.of_type(MT_PROJECTOR)])
        assert list(create["adapters"].values()) == [x.digest for x in folder.of_type(MT_ADAPTER)]

    uploads = [u for u in progress.updates if " upload " in u[0]]
    assert {u[0] for u in uploads} == {"gpu-1 upload qwq:32b", "gpu-2 upload qwq:32b", "gpu-3 upload qwq:32b"}
    assert all("MB/s" in u[3] for u in uploads)
    assert all(status.startswith("uploaded ") for task, status in progress.finished if " upload " in task)

    assert (await plan(state, base_dir=folder.root.parent)).changes == ()
    for node in (fresh1, partly, fresh2):
        node.clear_requests()
    assert failures(await apply(state, base_dir=folder.root.parent)) == []
    assert [n.write_requests() for n in (fresh1, partly, fresh2)] == [[], [], []]


async def test_a_declared_override_wins_over_the_folder_and_drift_is_seen(sim: Any, folder: ModelsFolder) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], model_toml(extra='parameters = { num_ctx = 16384 }\nsystem = "Be brief."\n'))
    assert failures(await apply(state, base_dir=folder.root.parent)) == []
    show = await shown(node, "qwq:32b")
    assert parse_show_parameters(show["parameters"]) == {**PARAMS, "num_ctx": 16384}
    assert show["system"] == "Be brief." and show["template"] == TEMPLATE
    assert (await plan(state, base_dir=folder.root.parent)).changes == ()
    node.install("qwq:32b", parameters={"temperature": 1.5})     # changed by hand on the node
    paths = {c.path_text for c in (await plan(state, base_dir=folder.root.parent)).changes}
    assert 'models."qwq:32b".parameters.temperature' in paths


@pytest.mark.parametrize("damage", [corrupt, truncate], ids=["corrupt", "truncated"])
async def test_a_damaged_blob_is_refused_with_its_file_named_and_nothing_sent(
        sim: Any, folder: ModelsFolder, damage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.targets.ollama import hashing as ollama

    monkeypatch.setattr(ollama, "_hashes", {})
    nodes = await add_nodes(sim, 3)
    path = damage(folder, folder.of_type(MT_PROJECTOR)[0])
    report = await apply(desired(nodes, model_toml()), base_dir=folder.root.parent)
    found = failures(report)          # a truncated blob: by plan (its size); a corrupt one: by apply (sha256)
    assert len(found) == 3                                       # one per node, each naming the file
    for failed in found:
        assert str(path) in failed
        assert ("truncated" if damage is truncate else "corrupt") in failed
    for node in nodes:
        assert node.write_requests() == [] and node.installed_models() == []


async def test_an_interrupted_upload_leaves_nothing_and_is_redone_from_the_start(
        sim: Any, folder: ModelsFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], model_toml())
    real = ollama_dir._chunks

    async def cut(path: Path, sent: list[int], on_chunk: Any) -> Any:
        async for chunk in real(path, sent, on_chunk):
            yield chunk[:1000]
            raise httpx.WriteError("connection reset by peer")

    monkeypatch.setattr(ollama_dir, "_chunks", cut)
    report = await apply(state, base_dir=folder.root.parent)
    assert len(report.failed) == 1 and "connection reset" in report.failed[0].message
    assert node.installed_models() == []
    assert not any(node.write_requests()[i].path == "/api/create" for i in range(len(node.write_requests())))
    async with httpx.AsyncClient() as http:
        for layer in folder.layers:
            assert (await http.head(f"{node.url}/api/blobs/{layer.digest}")).status_code == 404

    monkeypatch.setattr(ollama_dir, "_chunks", real)
    node.clear_requests()
    assert failures(await apply(state, base_dir=folder.root.parent)) == []
    assert node.installed_models() == ["qwq:32b"]
    assert (await plan(state, base_dir=folder.root.parent)).changes == ()


@pytest.mark.parametrize("limit", [1, 2])
async def test_uploads_run_on_several_nodes_at_once_up_to_the_bound(
        sim: Any, folder: ModelsFolder, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    nodes = await add_nodes(sim, 3)
    running: list[int] = [0]
    most: list[int] = [0]
    real = OllamaClient.push_blob

    async def slow(self: OllamaClient, digest: str, chunks: Any, size: int) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await asyncio.sleep(0.1)
            await real(self, digest, chunks, size)
        finally:
            running[0] -= 1

    monkeypatch.setattr(OllamaClient, "push_blob", slow)
    state = desired(nodes, model_toml(), extra=f"upload_concurrency = {limit}")
    assert failures(await apply(state, base_dir=folder.root.parent)) == []
    assert most[0] == limit


async def test_the_model_is_found_under_any_registry_host_and_with_old_colon_blob_names(
        sim: Any, tmp_path: Path) -> None:
    folder = write_model(tmp_path / ".ollama" / "models", "mirror.lab.internal:5000/library/qwq:32b",
                         template=TEMPLATE, params=PARAMS, colon_names=True)
    assert folder.blob_path(folder.weights).name.startswith("sha256:")
    [node] = await add_nodes(sim, 1)
    state = desired([node], model_toml(folder=".ollama"))          # a copied .ollama works too
    assert failures(await apply(state, base_dir=tmp_path)) == []
    assert node.installed_models() == ["qwq:32b"]
    assert parse_show_parameters((await shown(node, "qwq:32b"))["parameters"]) == PARAMS


async def test_a_model_missing_from_the_folder_is_reported_with_what_it_holds(sim: Any, folder: ModelsFolder) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], '[models."llama3.1:8b"]\nollama_dir = "models"\n')
    report = await apply(state, base_dir=folder.root.parent)
    [failed] = failures(report)
    assert "no manifest for llama3.1:8b" in failed and "registry.ollama.ai/library/qwq:32b" in failed
    assert node.write_requests() == []
