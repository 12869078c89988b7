"""Tables for the cost of an eviction, the tie order and rates shared across a tier's nodes."""
from __future__ import annotations

import pytest

from balancer.classify import RequestInfo
from balancer.conversation import Conversation
from balancer.cost import Demand, Entry, Hold, Job, NodeCost, Rates, estimate, plan
from balancer.knowledge import DEMAND, Knowledge
from balancer.scheduling import NodeView, Pick, Reliability as R, Snapshot

CODE, QWQ = "codestral:22b", "qwq:32b"
BOTH = frozenset({CODE, QWQ})


def req(model: str, user: str = "u9", tokens: int = 3000,
        conv: Conversation | None = None) -> Entry:
    info = RequestInfo("inference", "/api/chat", model, model, uses_slot=True, framing="ndjson",
                       stream=True, conversation=conv)
    return Entry(0, info, Job(model, None, tokens, conv), user=user)


def view(name: str, order: int, busy: int = 0, rel: R = R.RELIABLE) -> NodeView:
    return NodeView(name, order, rel, busy, 1, BOTH)


def where(d: object) -> tuple[str, str]:
    """("pick" | "hold", node)"""
    if isinstance(d, Pick):
        return ("pick", d.node)
    assert isinstance(d, Hold), d
    return ("hold", d.estimate.node)


# A qwq request: node a is free and holds codestral (a 10 s load, 11.5 s in all), node b holds
# qwq and frees in 15 s (16.5 s). Node c (when listed) holds codestral and is busy.
TWO_USERS = {CODE: frozenset({"u1", "u2"})}
EVICTION = [
    # (case, demand, node c (None: absent; or its reliability), expected)
    ("no one uses codestral: the load is cheaper", {}, None, ("pick", "a")),
    ("two others use codestral, a holds its last copy: queue behind qwq on b",
     TWO_USERS, None, ("hold", "b")),
    ("only the requester used codestral: nobody else pays the load",
     {CODE: frozenset({"u9"})}, None, ("pick", "a")),
    ("another loaded copy of codestral on c: evicting a costs no one",
     TWO_USERS, R.RELIABLE, ("pick", "a")),
    ("c's copy is on a node that failed: it is not within reach",
     TWO_USERS, R.UNRELIABLE, ("hold", "b")),
    ("demand for another model does not protect codestral",
     {"llama3:8b": frozenset({"u1", "u2"})}, None, ("pick", "a")),
]


@pytest.mark.parametrize("name,demand,c,expected", EVICTION, ids=[e[0] for e in EVICTION])
def test_eviction_cost(name: str, demand: Demand, c: R | None, expected: tuple[str, str]) -> None:
    nodes = [view("a", 0), view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((15.0,), QWQ)}
    if c is not None:
        nodes.append(view("c", 2, busy=1, rel=c))
        costs["c"] = NodeCost((30.0,), CODE)
    out = plan(Snapshot(tuple(nodes)), costs, [req(QWQ)], demand)
    assert where(out[0]) == expected


def test_the_eviction_is_priced_with_the_evicted_models_load() -> None:
    # codestral loads in 2 s on a (learned): two users paying 2 s each does not outweigh 15 s
    nodes = [view("a", 0), view("b", 1, busy=1)]
    fast = Rates(load=2.0)
    costs = {"a": NodeCost((0.0,), CODE, rates=((CODE, fast),)), "b": NodeCost((15.0,), QWQ)}
    assert where(plan(Snapshot(tuple(nodes)), costs, [req(QWQ)], TWO_USERS)[0]) == ("pick", "a")


def test_a_later_request_in_the_plan_sees_the_copy_an_earlier_one_removed() -> None:
    # two codestral copies (a, c); the first qwq request evicts a's copy (c keeps one); the
    # second, which would evict c's last copy, queues behind the first instead
    nodes = [view("a", 0), view("b", 1, busy=1), view("c", 2)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((40.0,), QWQ),
             "c": NodeCost((0.0,), CODE)}
    first, second = req(QWQ, "u8"), req(QWQ, "u9")
    second = Entry(1, second.request, second.job, user="u9")
    out = plan(Snapshot(tuple(nodes)), costs, [first, second], TWO_USERS)
    assert where(out[0]) == ("pick", "a")
    assert where(out[1]) == ("hold", "a")


# -- ties: no load first ---------------------------------------------------------------
OTHER = Conversation(1, (51, 52, 53))


def test_a_near_tie_prefers_no_load_over_an_older_cache() -> None:
    # the stable day's trace: 11.9 s behind qwq on b against 11.5 s loading qwq onto a, whose
    # cached conversation ran longer ago (the old rule took a and evicted codestral)
    nodes = [view("a", 0), view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), CODE, None, OTHER, 2000, cached_idle=60.0),
             "b": NodeCost((10.4,), QWQ, None, Conversation(2, (61, 62, 63)), 2000)}
    d = plan(Snapshot(tuple(nodes)), costs, [req(QWQ)])[0]
    assert where(d) == ("hold", "b")


TIES = [
    # (case, cost of a, cost of b, expected) for a codestral request of 4000 tokens (2 s)
    ("no load on either: the one that overwrites no cache", NodeCost((0.0,), CODE, None, OTHER, 2000),
     NodeCost((0.3,), CODE), ("hold", "b")),
    ("both load: the one that overwrites no cache", NodeCost((0.0,), QWQ, None, OTHER, 2000),
     NodeCost((0.3,), QWQ), ("hold", "b")),
    ("a load within the tie loses to a short wait", NodeCost((0.0,), None),
     NodeCost((10.3,), CODE, None, OTHER, 2000), ("hold", "b")),
    ("past the tie the sooner wins, load or not", NodeCost((0.0,), None),
     NodeCost((11.0,), CODE), ("pick", "a")),
]


@pytest.mark.parametrize("name,a,b,expected", TIES, ids=[t[0] for t in TIES])
def test_tie_order(name: str, a: NodeCost, b: NodeCost, expected: tuple[str, str]) -> None:
    nodes = [view("a", 0), view("b", 1, busy=1)]
    d = plan(Snapshot(tuple(nodes)), {"a": a, "b": b}, [req(CODE, tokens=4000)])[0]
    assert where(d) == expected


# -- demand --------------------------------------------------------------------------
def test_demand_is_each_users_last_model_within_the_window() -> None:
    k = Knowledge()
    clock = [1000.0]
    k.now = lambda: clock[0]  # type: ignore[method-assign]
    k.saw("ann", CODE)
    k.saw("bob", CODE)
    k.saw("bob", QWQ)  # bob moved to qwq
    assert k.demand() == {CODE: frozenset({"ann"}), QWQ: frozenset({"bob"})}
    clock[0] += DEMAND + 1
    assert k.demand() == {}


# -- rates shared by a tier's nodes ---------------------------------------------------------
def learn_load(k: Knowledge, node: str, seconds: float, key: int = 1) -> None:
    job = Job(QWQ, None, 100)
    k.started(key, node, job, estimate(node, NodeCost((0.0,), None), job), 0.0)
    k.ended(key, node, {"load_duration": int(seconds * 1e9), "eval_count": 250,
                        "eval_duration": 10_000_000_000})


def test_a_node_that_never_ran_a_model_uses_what_its_tier_learned() -> None:
    k = Knowledge()
    for name, tier in (("a", (0, 0)), ("b", (0, 0)), ("fast", (0, 2))):
        k.cost(name, 1, frozenset(), 0.0, tier)
    learn_load(k, "a", 12.0)
    job = Job(QWQ, None, 100)
    b = estimate("b", k.cost("b", 1, frozenset(), 0.0), job)
    assert b.load == pytest.approx(12.0) and b.learned  # not the 10 s default
    # another tier (the file's speed) keeps the defaults until one of its nodes learns
    assert estimate("fast", k.cost("fast", 1, frozenset(), 0.0), job).load == pytest.approx(10.0)
    # the shared rates decay as a node's own do; a node's own rates come first
    learn_load(k, "a", 2.0, key=2)
    assert estimate("b", k.cost("b", 1, frozenset(), 0.0), job).load == pytest.approx(9.0)
    learn_load(k, "b", 20.0, key=3)  # b now holds qwq: ask its rates
    assert k.cost("b", 1, frozenset(), 0.0).rates_for(QWQ).load == pytest.approx(20.0)


def test_a_short_load_on_a_node_that_held_nothing_is_learned_and_shared() -> None:
    # a small model (or one in the page cache) loads in 0.2 s: a node that held nothing
    # reports what a load takes there, and its tier's other nodes stop fearing 10 s loads
    k = Knowledge()
    for name in ("a", "b"):
        k.cost(name, 1, frozenset(), 0.0, (0, 0))
    learn_load(k, "a", 0.2)
    assert k.cost("b", 1, frozenset(), 0.0).rates_for(QWQ).load == pytest.approx(0.2)
    # a node that held a model may just have had this one loaded too: not taken as a load
    k2 = Knowledge()
    k2.node("c").model = CODE
    learn_load(k2, "c", 0.2)
    assert k2.nodes["c"].rates[QWQ].load == pytest.approx(10.0)


def test_a_cold_load_whose_answer_omits_load_duration_took_no_time() -> None:
    # Ollama leaves zero durations out (Go omitempty): a node that held nothing and loaded
    # in no time must not keep the 10 s default, or idle nodes look worse than a busy one
    k = Knowledge()
    for name in ("a", "b"):
        k.cost(name, 1, frozenset(), 0.0, (0, 0))
    job = Job(QWQ, None, 100)
    k.started(1, "a", job, estimate("a", NodeCost((0.0,), None), job), 0.0)
    k.ended(1, "a", {"total_duration": 2_000_000_000, "eval_count": 250,
                     "eval_duration": 1_000_000_000})
    assert k.cost("b", 1, frozenset(), 0.0).rates_for(QWQ).load == pytest.approx(0.0)
    # a final chunk without Ollama's durations at all (/v1) says nothing about the load
    k2 = Knowledge()
    k2.started(1, "a", job, estimate("a", NodeCost((0.0,), None), job), 0.0)
    k2.ended(1, "a", {"eval_count": 250})
    assert k2.nodes["a"].rates[QWQ].load == pytest.approx(10.0)


def test_a_change_that_frees_no_slot_keeps_the_waiters_holds() -> None:
    # both nodes busy: the waiters' Holds from the last plan stand (no re-plan over the
    # nodes); once a slot frees, the first waiter is planned afresh and takes it
    busy = Snapshot((NodeView("a", 0, in_flight=1, models=BOTH),
                     NodeView("b", 1, in_flight=1, models=BOTH)))
    costs = {"a": NodeCost((5.0,), CODE), "b": NodeCost((9.0,), CODE)}
    e1 = Entry(1, req(CODE).request, Job(CODE, None, 100))
    e2 = Entry(2, req(CODE).request, Job(CODE, None, 100))
    first = plan(busy, costs, [e1, e2])
    assert all(isinstance(d, Hold) for d in first.values())
    stale = {e1.id: Hold(estimate("b", costs["b"], e1.job)), e2.id: first[e2.id]}
    assert plan(busy, costs, [e1, e2], kept=stale)[e1.id] == stale[e1.id]
    freed = Snapshot((NodeView("a", 0, in_flight=0, models=BOTH), busy.nodes[1]))
    costs["a"] = NodeCost((0.0,), CODE)
    after = plan(freed, costs, [e1, e2], kept=stale)
    assert isinstance(after[e1.id], Pick) and after[e1.id].node == "a"
    assert isinstance(after[e2.id], Hold)
