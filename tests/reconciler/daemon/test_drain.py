"""While the reconciler rebuilds a model on a node, the balancer sends that model elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from balancer import Balancer, NodeSpec, Settings
from reconciler.daemon.wiring import Draining, draining
from reconciler.plan.changes import Action, Change
from reconciler.targets.ollama.diff import Work
from reconciler.targets.base import Disruption, Observed, Progress
from reconciler.targets.ollama import node_targets
from tests.reconciler.targets.ollama.conftest import desired
from simulator import Fault, Simulator, Timing


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


class Rebuild:
    """Stands in for the Ollama target of a node: while it "re-creates" a model, it asks the
    balancer for that model and for another one, and records which node answered."""

    def __init__(self, balancer: Balancer, node: str = "gpu-1", models: tuple[str, ...] = ("llama3.2:1b", "qwq:32b")) -> None:
        self.name = f"ollama/{node}"
        self.balancer = balancer
        self.models = models
        self.served: dict[str, list[str]] = {}

    async def observe(self) -> Observed:
        return Observed(self.name)

    def diff(self, observed: Observed) -> tuple[list[Change], list[str]]:
        return [], []

    def disrupts(self, change: Change) -> Disruption:
        return Disruption(self.name.split("/", 1)[1], str(change.path[1]))     # every change re-creates

    def abandonable(self, change: Change) -> bool:
        return False

    async def apply(self, change: Change, progress: Progress) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for model in self.models:
                for _ in range(3):
                    r = await client.post(self.balancer.url + "/api/generate",
                                          json={"model": model, "prompt": "x", "stream": False})
                    assert r.status_code == 200, r.text
                    self.served.setdefault(model, []).append(r.json()["response"].split(" from ")[1].split(":")[0])

    async def close(self) -> None:
        pass


async def test_a_model_being_rebuilt_on_a_node_is_routed_elsewhere(sim: Simulator) -> None:
    a = await sim.add_node("gpu-1", models=["llama3.2:1b", "qwq:32b"], timing=Timing.instant())
    b = await sim.add_node("gpu-2", models=["llama3.2:1b"], timing=Timing.instant())
    balancer = Balancer(Settings(poll_interval=0.2), [NodeSpec("gpu-1", a.url), NodeSpec("gpu-2", b.url)])
    await balancer.start("127.0.0.1", 0)
    try:
        await balancer.refresh()
        inner = Rebuild(balancer)
        wrapped = Draining(inner, balancer, {})
        change = Change("ollama/gpu-1", Action.REPLACE, ("models", "llama3.2:1b", "parameters", "num_ctx"), 1, 2,
                        data=Work("create"))
        await wrapped.apply(change, progress=None)  # type: ignore[arg-type]
        assert inner.served["llama3.2:1b"] == ["gpu-2"] * 3   # never the node being rebuilt
        assert inner.served["qwq:32b"] == ["gpu-1"] * 3       # other models still go there
        # after the change gpu-1 takes that model again: with gpu-2 gone, it answers
        b.set_fault(Fault.REFUSE)
        async with httpx.AsyncClient() as client:
            r = await client.post(balancer.url + "/api/generate",
                                  json={"model": "llama3.2:1b", "prompt": "x", "stream": False})
        assert " from gpu-1" in r.json()["response"]
    finally:
        await balancer.stop(drain_timeout=1)


async def test_every_node_rebuilding_a_model_never_leaves_it_unserved(sim: Simulator) -> None:
    a = await sim.add_node("gpu-1", models=["llama3.2:1b"], timing=Timing.instant())
    b = await sim.add_node("gpu-2", models=["llama3.2:1b"], timing=Timing.instant())
    balancer = Balancer(Settings(poll_interval=0.2), [NodeSpec("gpu-1", a.url), NodeSpec("gpu-2", b.url)])
    await balancer.start("127.0.0.1", 0)
    try:
        await balancer.refresh()
        wrap = draining(balancer)
        one, two = Rebuild(balancer, "gpu-1", ("llama3.2:1b",)), Rebuild(balancer, "gpu-2", ("llama3.2:1b",))
        targets = wrap([one, two])          # one pass: both nodes re-create the same model
        change = lambda node: Change(f"ollama/{node}", Action.REPLACE,  # noqa: E731
                                     ("models", "llama3.2:1b", "parameters", "num_ctx"), 1, 2, data=Work("create"))
        await asyncio.gather(targets[0].apply(change("gpu-1"), None), targets[1].apply(change("gpu-2"), None))  # type: ignore[arg-type]
        assert one.served["llama3.2:1b"] == ["gpu-2"] * 3 and two.served["llama3.2:1b"] == ["gpu-1"] * 3
    finally:
        await balancer.stop(drain_timeout=1)


def test_only_rebuilds_and_deletes_on_ollama_nodes_drain() -> None:
    [node] = node_targets(desired([type("N", (), {"name": "gpu-1", "url": "http://127.0.0.1:9"})()], ""))
    d = Draining(node, None, {})  # type: ignore[arg-type]
    hit = Disruption("gpu-1", "m:1")
    assert d.disrupts(Change("ollama/gpu-1", Action.DELETE, ("models", "m:1"), data=Work("delete"))) == hit
    assert d.disrupts(Change("ollama/gpu-1", Action.REPLACE, ("models", "m:1", "num_ctx"), data=Work("create"))) == hit
    assert d.disrupts(Change("ollama/gpu-1", Action.UPDATE, ("models", "m:1", "loaded"), data=Work("load"))) is None
    # a new digest downloads while the node keeps serving the model it has
    assert d.disrupts(Change("ollama/gpu-1", Action.REPLACE, ("models", "m:1", "digest"), data=Work("pull"))) is None
    assert d.abandonable(Change("ollama/gpu-1", Action.REPLACE, ("models", "m:1", "digest"), data=Work("pull")))
    assert not d.abandonable(Change("ollama/gpu-1", Action.DELETE, ("models", "m:1"), data=Work("delete")))
    from reconciler.config import load_text
    from reconciler.targets.openwebui import openwebui_targets
    [owui] = openwebui_targets(load_text('version = 1\n[openwebui]\nurl = "http://127.0.0.1:9"\napi_key = "${K}"\n',
                                         env={"K": "k"}))
    other = Draining(owui, None, {})  # type: ignore[arg-type]
    assert other.disrupts(Change("openwebui", Action.UPDATE, ("models", "m:1", "params", "x"))) is None
