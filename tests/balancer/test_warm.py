"""The warmer's policies as tables (plan_loads, pure): orphan reload and pins."""
from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from balancer import NodeSpec
from balancer.params import ModelParams
from balancer.warm import Load, Seen, plan_loads
from simulator import Timing
from tests.balancer.conftest import chat_lines, until

CODE, QWQ = "codestral:22b", "qwq:32b"
BOTH = frozenset({CODE, QWQ})
F = frozenset


def node(name: str, order: int, idle: float | None = 60.0, holds: frozenset[str] = F(),
         models: frozenset[str] | None = BOTH, pinned: tuple[str, ...] = (),
         reach: bool = True) -> Seen:
    return Seen(name, order, idle, models, holds, pinned, reach)


def loads(out: list[Load]) -> list[tuple[str, str, bool]]:
    return [(x.node, x.model, x.pin) for x in out]


ORPHAN = [
    # (case, nodes, demand, expected loads)
    ("qwq in demand, no copy: loaded on the idle node that holds nothing protected",
     [node("a", 0, holds=F({CODE})), node("b", 1, holds=F({CODE})), node("c", 2, None)],
     {CODE: 3, QWQ: 2}, [("a", QWQ, False)]),
    ("the only idle node holds codestral's last copy: nothing is evicted",
     [node("a", 0, holds=F({CODE})), node("b", 1, None, holds=F({CODE})),
      node("c", 2, None, holds=F({QWQ}))],
     {CODE: 3}, []),
    ("a copy on a node that failed is out of reach: reload elsewhere",
     [node("a", 0, holds=F({QWQ}), reach=False), node("b", 1, holds=F({CODE})),
      node("c", 2, holds=F({CODE}))],
     {CODE: 3, QWQ: 2}, [("b", QWQ, False)]),
    ("a loaded copy within reach: nothing to do",
     [node("a", 0, None, holds=F({QWQ})), node("b", 1, holds=F({CODE}))],
     {CODE: 3, QWQ: 2}, []),
    ("busy nodes are never loaded, even for an orphan",
     [node("a", 0, None), node("b", 1, None, holds=F({CODE})), node("c", 2, None, holds=F({CODE}))],
     {QWQ: 2}, []),
    ("a node whose disk lacks the model, or is not known yet, is skipped",
     [node("a", 0, models=F({CODE})), node("b", 1, models=None), node("c", 2)],
     {QWQ: 1}, [("c", QWQ, False)]),
    ("an empty node before one holding a model in use; then the longest idle",
     [node("a", 0, idle=90.0, holds=F({CODE})), node("b", 1, idle=10.0, holds=F({CODE})),
      node("c", 2, idle=5.0), node("d", 3, idle=50.0)],
     {CODE: 1, QWQ: 1}, [("d", QWQ, False)]),
    ("no demand, no load", [node("a", 0)], {}, []),
]


@pytest.mark.parametrize("name,nodes,demand,expected", ORPHAN, ids=[o[0] for o in ORPHAN])
def test_orphan_reload(name: str, nodes: list[Seen], demand: dict[str, int],
                       expected: list[tuple[str, str, bool]]) -> None:
    assert loads(plan_loads(nodes, demand, pin_idle=5.0)) == expected


PINS = [
    ("idle long enough, pin missing, its model has another copy: pinned",
     [node("a", 0, holds=F({QWQ}), pinned=(CODE,)), node("b", 1, None, holds=F({QWQ}))],
     {QWQ: 2}, [("a", CODE, True)]),
    ("its model's last copy in demand: kept",
     [node("a", 0, holds=F({QWQ}), pinned=(CODE,)), node("b", 1, None, holds=F({CODE}))],
     {QWQ: 2}, []),
    ("its model's last copy, but nobody asked for it lately: pinned",
     [node("a", 0, holds=F({QWQ}), pinned=(CODE,))], {}, [("a", CODE, True)]),
    ("just freed: not even for an orphan",
     [node("a", 0, idle=0.2), node("b", 1, None, holds=F({CODE}))], {QWQ: 1}, []),
    ("idle for less than pin_idle: not yet",
     [node("a", 0, idle=2.0, pinned=(CODE,))], {}, []),
    ("serving or queued: never", [node("a", 0, None, pinned=(CODE,))], {}, []),
    ("already resident: nothing", [node("a", 0, holds=F({CODE}), pinned=(CODE,))], {}, []),
    ("one of two pins resident: the second is not loaded over it",
     [node("a", 0, holds=F({CODE}), pinned=(QWQ, CODE))], {}, []),
    ("a pin the node does not have on disk: nothing",
     [node("a", 0, models=F({QWQ}), pinned=(CODE,))], {}, []),
    ("a node out of reach: nothing", [node("a", 0, pinned=(CODE,), reach=False)], {}, []),
    ("an orphan reload takes the node first, the pins wait",
     [node("a", 0, pinned=(CODE,)), node("b", 1, None, holds=F({CODE}))],
     {QWQ: 1}, [("a", QWQ, False)]),
]


@pytest.mark.parametrize("name,nodes,demand,expected", PINS, ids=[p[0] for p in PINS])
def test_pins(name: str, nodes: list[Seen], demand: dict[str, int],
              expected: list[tuple[str, str, bool]]) -> None:
    assert loads(plan_loads(nodes, demand, pin_idle=5.0)) == expected


def test_without_queueing_only_pins_are_loaded() -> None:
    nodes = [node("a", 0, pinned=(CODE,)), node("b", 1, holds=F({CODE}))]
    assert loads(plan_loads(nodes, {QWQ: 1}, pin_idle=5.0, orphans=False)) == [("a", CODE, True)]


# -- on simulated GPUs -------------------------------------------------------------------
SCALE = 0.01  # 100x: a 12 s load takes 0.12 s
TIMING = Timing(load_delay=12.5, prompt_tps=2000.0, gen_tps=30.0, warm_load=0.05,
                time_scale=SCALE)
FAST_SCALE = dict(queue_timeout=600 * SCALE, silence_timeout=120 * SCALE,
                  poll_interval=2 * SCALE, time_scale=SCALE)


class Watched(list):  # type: ignore[type-arg]
    """A node's request log that notes every load call made while the node was serving."""

    def __init__(self, name: str, violations: list[str]) -> None:
        super().__init__()
        self.name, self.violations = name, violations

    def append(self, rec: Any) -> None:
        if rec.is_load_call():
            serving = [r for r in self if r.method == "POST" and r.status is None
                       and r.path in ("/api/chat", "/api/generate") and not r.is_load_call()
                       and not r.client_disconnected]
            if serving:
                self.violations.append(f"load of {rec.body.get('model')} on {self.name} while "
                                       f"it served {serving[0].body.get('model')}")
        super().append(rec)


async def gpus(sim: Any, violations: list[str]) -> list[Any]:
    nodes = [await sim.add_node(name=f"gpu-{i}", models=[CODE, QWQ], timing=TIMING,
                                reply_tokens=30) for i in range(3)]
    for n in nodes:
        n.requests = Watched(n.name, violations)
    return nodes


def load_calls(node: Any) -> list[Any]:
    return [r for r in node.requests if r.is_load_call()]


async def test_a_model_whose_only_copy_died_is_reloaded_before_anyone_asks(
        sim, make_balancer, http) -> None:
    violations: list[str] = []
    nodes = await gpus(sim, violations)
    declared = {QWQ: ModelParams(options={"num_ctx": 14000, "temperature": 0.6})}
    b = await make_balancer(nodes, model_params=declared, **FAST_SCALE)
    body = {"model": QWQ, "messages": [{"role": "user", "content": "code " * 300}]}
    status, lines, _ = await chat_lines(http, b, body)
    assert status == 200
    [holder] = [n for n in nodes if QWQ in n.loaded_models()]
    assert b.metrics.warmer_loads == 0
    holder.set_fault("refuse")  # switched off: the poll finds it unreachable
    await until(lambda: any(QWQ in n.loaded_models() for n in nodes if n is not holder),
                timeout=10)
    assert b.metrics.warmer_loads == 1
    [call] = [c for n in nodes if n is not holder for c in load_calls(n)]
    assert call.body["options"] == {"num_ctx": 14000}  # load-time options only: the declared ones
    assert "prompt" not in call.body
    # the next question finds qwq loaded: no load in its answer
    await until(lambda: not b.fleet.warming)
    status, lines, _ = await chat_lines(http, b, body)
    assert status == 200 and lines[-1]["load_duration"] < 1e9
    assert violations == []


async def test_pins_come_back_on_idle_nodes_and_never_load_over_traffic(
        sim, make_balancer, http) -> None:
    """Issue 21's balancer part: codestral pinned on three one-GPU nodes (where it does not fit
    beside qwq), 10 minutes of mixed traffic (modelled; 6 s here)."""
    violations: list[str] = []
    nodes = await gpus(sim, violations)
    declared = {CODE: ModelParams(options={"num_ctx": 16384}, keep_loaded=True)}
    specs = [NodeSpec(n.name, n.url, pinned=(CODE,)) for n in nodes]
    b = await make_balancer(specs, model_params=declared, **FAST_SCALE)
    loop = asyncio.get_running_loop()
    end = loop.time() + 600 * SCALE

    async def user(i: int, model: str) -> None:
        rng = random.Random(i)
        while loop.time() < end:
            messages = [{"role": "user", "content": f"user {i}: " + "code " * 200}]
            status, _, broke = await chat_lines(http, b, {"model": model, "messages": messages})
            assert status == 200 and broke is None
            await asyncio.sleep(rng.uniform(5, 40) * SCALE)

    await asyncio.gather(*(user(i, m) for i, m in enumerate([CODE, CODE, QWQ, QWQ])))
    assert violations == [] and b.metrics.rejected_total == 0
    assert b.metrics.warmer_loads >= 1  # qwq traffic evicted codestral somewhere: pinned back

    def pinned_nodes() -> list[str]:
        return [n.name for n in nodes if CODE in n.loaded_models()]

    # idle now; while qwq was asked for lately, its last copy stays (codestral comes back
    # on every other node)
    def qwq_kept() -> bool:
        return QWQ not in b.fleet.knowledge.demand() or any(QWQ in n.loaded_models()
                                                            for n in nodes)

    while len(pinned_nodes()) < 3 and QWQ in b.fleet.knowledge.demand():
        assert qwq_kept()
        await asyncio.sleep(0.01)
    # once nobody has asked for qwq for a while, codestral is resident everywhere
    try:
        await until(lambda: len(pinned_nodes()) == 3, timeout=10)
    except AssertionError:
        raise AssertionError([(n.name, n.loaded_models()) for n in nodes],
                             b.states(), b.fleet.knowledge.demand()) from None
    pins = [c for n in nodes for c in load_calls(n) if c.body["model"] == CODE]
    assert pins and all(c.body["keep_alive"] == -1 and c.body["options"] == {"num_ctx": 16384}
                        for c in pins)
    assert violations == []


async def test_a_pinned_embedding_model_is_loaded_through_embed(sim, make_balancer) -> None:
    """Ollama refuses /api/generate for an embedding model (400 "does not support generate"):
    the warmer pins it with /api/embed and no input, as the reconciler once did."""
    embed = "nomic-embed-text:v1.5"
    node = await sim.add_node(name="gpu-0", models=[embed], timing=TIMING)
    declared = {embed: ModelParams(keep_loaded=True)}
    b = await make_balancer([NodeSpec(node.name, node.url, pinned=(embed,))],
                            model_params=declared, **FAST_SCALE)
    await until(lambda: embed in node.loaded_models(), timeout=10)
    paths = [r.path for r in node.requests if (r.body or {}).get("model") == embed]
    assert paths[-1] == "/api/embed" and b.metrics.warmer_loads >= 1
