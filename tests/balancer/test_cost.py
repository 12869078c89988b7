"""The cost model as tables: estimate of time to first token, choice, queue plan and order."""
from __future__ import annotations

import pytest

from balancer.classify import RequestInfo
from balancer.conversation import Conversation
from balancer.cost import (STALE, Entry, Hold, Job, NodeCost, Rates, cached_prefix, estimate,
                           plan)
from balancer.knowledge import Knowledge
from balancer.scheduling import NodeView, Pick, Reliability as R, Snapshot

CODE, QWQ = "codestral:22b", "qwq:32b"
BOTH = frozenset({CODE, QWQ})
FAST = Rates(load=10.0, prefill=2000.0, gen=30.0, answer=250.0)
TURN3 = Conversation(1, (11, 12, 13, 14, 15))  # user, assistant, user, assistant, user
TURN2 = Conversation(1, (11, 12, 13))


def req(model: str = CODE, tokens: int = 4000, conv: Conversation | None = None,
        ctx: int | None = None) -> tuple[RequestInfo, Job]:
    info = RequestInfo("inference", "/api/chat", model, model, uses_slot=True, framing="ndjson",
                       stream=True, conversation=conv)
    return info, Job(model, ctx, tokens, conv)


def view(name: str, order: int, busy: int = 0, rel: R = R.RELIABLE) -> NodeView:
    return NodeView(name, order, rel, busy, 1, BOTH)


# -- the estimate ---------------------------------------------------------------------
EST = [
    # (case, node cost, job, ttft)
    ("free, model loaded, nothing cached: prefill only",
     NodeCost((0.0,), CODE), req()[1], 2.0),
    ("free, other model: load + prefill", NodeCost((0.0,), QWQ), req()[1], 12.0),
    ("free, same model but another num_ctx: reload", NodeCost((0.0,), CODE, 8192),
     req(ctx=16384)[1], 12.0),
    ("busy 3 s, model loaded, conversation cached with its answer: wait + the new part",
     NodeCost((3.0,), CODE, None, TURN2, 3000), req(conv=TURN3)[1], 3.5),
    ("cache of another conversation counts nothing",
     NodeCost((0.0,), CODE, None, Conversation(1, (99, 12, 13)), 3000), req(conv=TURN3)[1], 2.0),
    ("a switch of model loses the cache", NodeCost((0.0,), QWQ, None, TURN2, 3000),
     req(conv=TURN3)[1], 12.0),
    ("learned rates replace the defaults",
     NodeCost((0.0,), QWQ, rates=((CODE, Rates(load=4.0, prefill=4000.0)),)), req()[1], 5.0),
]


@pytest.mark.parametrize("name,cost,job,ttft", EST, ids=[c[0] for c in EST])
def test_estimate(name: str, cost: NodeCost, job: Job, ttft: float) -> None:
    assert estimate("n", cost, job).ttft == pytest.approx(ttft)


def test_cached_prefix_needs_the_whole_previous_conversation_resent() -> None:
    assert cached_prefix(TURN2, TURN3)
    assert not cached_prefix(TURN3, TURN3)  # nothing new: not a continuation
    assert not cached_prefix(TURN2, Conversation(2, TURN3.messages))  # other model/options
    assert not cached_prefix(Conversation(1, (11, 77, 13)), TURN3)


# -- the choice -------------------------------------------------------------------------
def choose_one(nodes: list[NodeView], costs: dict[str, NodeCost], request: tuple[RequestInfo, Job],
               tried: frozenset[str] = frozenset()) -> object:
    info, job = request
    return plan(Snapshot(tuple(nodes)), costs, [Entry(0, info, job, tried)])[0]


def test_busy_node_with_the_model_beats_a_free_node_that_must_load() -> None:
    nodes = [view("a", 0), view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), QWQ), "b": NodeCost((3.0,), CODE)}
    d = choose_one(nodes, costs, req())
    assert isinstance(d, Hold) and d.estimate.node == "b" and d.estimate.ttft == pytest.approx(5.0)


def test_a_long_wait_loses_to_a_load() -> None:
    nodes = [view("a", 0), view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), QWQ), "b": NodeCost((30.0,), CODE)}
    assert choose_one(nodes, costs, req()) == Pick("a", "lowest estimate (12.0 s to first token)")


def test_cached_conversation_beats_an_empty_node() -> None:
    nodes = [view("a", 0), view("b", 1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((0.0,), CODE, None, TURN2, 3000)}
    d = choose_one(nodes, costs, req(conv=TURN3))
    assert isinstance(d, Pick) and d.node == "b" and "cached conversation" in d.reason


OTHER = Conversation(TURN2.key, (77, 78, 79))  # another user's chat on the same model


@pytest.mark.parametrize("why, a, b, goes_to", [
    # a request that continues no cached conversation: both nodes give the same estimate
    ("an empty slot before a cached conversation",
     NodeCost((0.0,), CODE, None, OTHER, 3000, cached_idle=40.0), NodeCost((0.0,), CODE), "b"),
    ("the least recently used conversation is overwritten, the fresh one kept",
     NodeCost((0.0,), CODE, None, OTHER, 3000, cached_idle=2.0),
     NodeCost((0.0,), CODE, None, TURN2, 3000, cached_idle=60.0), "b"),
    ("a conversation idle past STALE counts as none",
     NodeCost((0.0,), CODE, None, OTHER, 3000, cached_idle=5.0),
     NodeCost((0.0,), CODE, None, TURN2, 3000, cached_idle=STALE + 1), "b"),
    ("a near tie (0.2 s) still spares the fresh conversation",
     NodeCost((0.0,), CODE, None, OTHER, 3000, cached_idle=2.0),
     NodeCost((0.2,), CODE, None, TURN2, 3000, cached_idle=60.0), "b"),
    ("a clear difference (3 s) is not a tie",
     NodeCost((0.0,), CODE, None, OTHER, 3000, cached_idle=2.0),
     NodeCost((3.0,), CODE, None, TURN2, 3000, cached_idle=60.0), "a"),
])
def test_a_tie_overwrites_the_cache_least_likely_to_be_continued(why: str, a: NodeCost,
                                                                b: NodeCost, goes_to: str) -> None:
    nodes = [view("a", 0), view("b", 1, busy=1 if b.slots_free_in[0] else 0)]
    d = choose_one(nodes, {"a": a, "b": b}, req(conv=Conversation(TURN2.key, (1, 2, 3))))
    node = d.node if isinstance(d, Pick) else d.estimate.node if isinstance(d, Hold) else None
    assert node == goes_to, why


def test_knowledge_tells_how_long_a_cached_conversation_has_been_idle() -> None:
    k = Knowledge()
    clock = [100.0]
    k.now = lambda: clock[0]  # type: ignore[method-assign]
    job = Job(CODE, None, 1000, TURN2)
    k.started(1, "n", job, estimate("n", NodeCost((0.0,), CODE), job), 0.0)
    clock[0] = 110.0
    assert k.cost("n", 1, frozenset(), clock[0]).cached_idle == 0.0  # running
    k.ended(1, "n", None)
    clock[0] = 125.0
    assert k.cost("n", 1, frozenset(), clock[0]).cached_idle == pytest.approx(15.0)


def test_unreliable_nodes_are_not_weighed_while_a_reliable_one_can_serve() -> None:
    nodes = [view("a", 0, rel=R.UNRELIABLE), view("b", 1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((0.0,), QWQ)}
    assert choose_one(nodes, costs, req()) == Pick("b", "lowest estimate (12.0 s to first token)")


def test_unreliable_node_gets_its_second_chance_when_it_is_cheaper_than_waiting() -> None:
    nodes = [view("a", 0, rel=R.UNRELIABLE), view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((20.0,), CODE)}
    d = choose_one(nodes, costs, req())
    assert isinstance(d, Pick) and d.node == "a" and d.second_chance


def test_tried_nodes_are_left_out() -> None:
    nodes = [view("a", 0), view("b", 1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((0.0,), QWQ)}
    d = choose_one(nodes, costs, req(), frozenset({"a"}))
    assert isinstance(d, Pick) and d.node == "b"


def test_a_node_the_polls_found_unreachable_is_not_weighed() -> None:
    # still Reliable (no request failed there yet) and free, but the last poll could not reach it
    down = NodeView("a", 0, R.RELIABLE, 0, 1, BOTH, unfit="is unreachable by the last poll (refused)")
    nodes = [down, view("b", 1, busy=1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((3.0,), CODE)}
    d = choose_one(nodes, costs, req())
    assert isinstance(d, Hold) and d.estimate.node == "b"


# -- the plan: requests before count --------------------------------------------------------
def test_queue_order_earlier_requests_claim_first() -> None:
    nodes = [view("a", 0), view("b", 1)]
    costs = {"a": NodeCost((0.0,), CODE), "b": NodeCost((0.0,), QWQ)}
    first, second = req(), req()
    out = plan(Snapshot(tuple(nodes)), costs,
               [Entry(1, *first), Entry(2, *second)])
    assert isinstance(out[1], Pick) and out[1].node == "a"
    # the second codestral request counts the first one's run on a (2 s + 8.3 s): 12.3 s there
    # against 12 s loading on b is a tie, and a tie goes where no load is needed
    assert isinstance(out[2], Hold) and out[2].estimate.node == "a"
    # a clear gain still loads: a longer first answer on a makes b the sooner
    out = plan(Snapshot(tuple(nodes)), costs, [Entry(1, *req(tokens=20000)), Entry(2, *second)])
    assert isinstance(out[2], Pick) and out[2].node == "b"


def test_queue_a_held_request_reserves_its_node_for_later_ones() -> None:
    nodes = [view("a", 0, busy=1), view("b", 1)]
    costs = {"a": NodeCost((1.0,), CODE), "b": NodeCost((0.0,), QWQ)}
    out = plan(Snapshot(tuple(nodes)), costs, [Entry(1, *req(tokens=200)),
                                               Entry(2, *req(tokens=200))])
    assert isinstance(out[1], Hold) and out[1].estimate.node == "a"
    # behind the held one: a frees after 1 + 0.1 + 8.3 s, still sooner than b's 10 s load
    assert isinstance(out[2], Hold) and out[2].estimate.start == pytest.approx(9.43, abs=0.01)


# -- learning -------------------------------------------------------------------------------
def test_rates_are_learned_from_the_final_chunk_and_the_uncached_estimate() -> None:
    k = Knowledge()
    job = Job(CODE, None, 4000, TURN3)
    est = estimate("n", NodeCost((0.0,), None), job)  # a load, all 4000 tokens uncached
    k.started(1, "n", job, est, 0.0)
    # prompt_eval_count is the whole prompt; the duration is what counts: 4000 tokens in 1 s
    k.ended(1, "n", {"load_duration": 6_000_000_000, "prompt_eval_count": 4000,
                     "prompt_eval_duration": 1_000_000_000, "eval_count": 100,
                     "eval_duration": 2_000_000_000})
    r = k.nodes["n"].rates[CODE]
    assert (r.load, r.prefill, r.gen, r.answer) == (6.0, 4000.0, 50.0, 100)  # first: as measured
    assert k.nodes["n"].model == CODE and k.nodes["n"].cached == TURN3
    assert k.nodes["n"].cached_tokens == 4100  # the prompt and its answer
    # later samples decay the old value: a changed GPU shows after a few requests
    k.started(2, "n", job, est, 0.0)
    k.ended(2, "n", {"load_duration": 16_000_000_000, "prompt_eval_duration": 4_000_000_000,
                     "eval_count": 200, "eval_duration": 20_000_000_000})
    r = k.nodes["n"].rates[CODE]
    assert r.load == pytest.approx(6 + 0.3 * (16 - 6))
    assert r.prefill == pytest.approx(4000 + 0.3 * (1000 - 4000))
    assert r.gen == pytest.approx(50 + 0.3 * (10 - 50))
    assert r.answer == pytest.approx(100 + 0.3 * (200 - 100))


def test_a_warm_runner_does_not_teach_a_short_load() -> None:
    k = Knowledge()
    k.node("n").rates[CODE] = Rates()
    job = Job(CODE, None, 10, None)
    k.started(1, "n", job, estimate("n", NodeCost((0.0,), CODE), job), 0.0)
    k.ended(1, "n", {"load_duration": 50_000_000, "eval_count": 250,
                     "eval_duration": 8_333_333_333})
    assert k.nodes["n"].rates[CODE].load == 10.0


# -- what the final chunk says (framing.EndChecker.final) ----------------------------------
def test_the_final_chunk_is_kept_for_learning() -> None:
    from balancer.framing import EndChecker

    c = EndChecker("ndjson", "application/x-ndjson")
    c.feed(b'{"message":{"content":"a"},"done":false}\n{"done":true,"eval_count":7,')
    assert c.final is None
    c.feed(b'"eval_duration":100}\n')
    assert c.complete and c.final == {"done": True, "eval_count": 7, "eval_duration": 100}

    o = EndChecker("openai", "text/event-stream")
    o.feed(b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}\n\n'
           b"data: [DONE]\n\n")
    assert o.complete and o.final == {"eval_count": 12}

    a = EndChecker("anthropic", "text/event-stream")
    a.feed(b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5}}'
           b"\n\nevent: message_stop\ndata: {}\n\n")
    assert a.complete and a.final == {"eval_count": 5}


def test_without_durations_generation_is_timed_on_our_clock() -> None:
    k = Knowledge()
    k.now = lambda: 100.0  # type: ignore[method-assign]
    job = Job(CODE, None, 10, None)
    k.started(1, "n", job, estimate("n", NodeCost((0.0,), CODE), job), 0.0)
    k.first_byte(1, "n")
    k.now = lambda: 104.0  # type: ignore[method-assign]
    k.ended(1, "n", {"eval_count": 120})
    r = k.nodes["n"].rates[CODE]
    assert r.answer == 120 and r.gen == pytest.approx(30.0)


def test_a_model_the_poll_lists_beside_the_last_one_needs_no_load() -> None:
    k = Knowledge()
    k.polled("n", frozenset({CODE, "nomic-embed-text:latest"}))
    embed = Job("nomic-embed-text:latest", None, 10, None)
    cost = k.cost("n", 1, frozenset(), 0.0)
    est = estimate("n", cost, embed)
    assert est.load == 0
    k.started(1, "n", embed, est, 0.0)
    k.ended(1, "n", None)
    # the chat model stays loaded beside the embedding model
    assert estimate("n", k.cost("n", 1, frozenset(), 0.0), req()[1]).load == 0
    # ... until a load of another model is sent there: assumed to evict both
    big = Job(QWQ, None, 10, None)
    k.started(2, "n", big, estimate("n", k.cost("n", 1, frozenset(), 0.0), big), 0.0)
    k.ended(2, "n", None)
    assert estimate("n", k.cost("n", 1, frozenset(), 0.0), req()[1]).load == 10.0


def test_a_v1_model_is_costed_as_its_base_models_runner() -> None:
    """/v1 requests go to the `-v1` twin (params.py), which runs on the base model's runner:
    a node with the base loaded must not look like it needs a load (an eviction elsewhere)."""
    from balancer.classify import classify
    from balancer.waitlist import job_of

    body = b'{"model":"codestral:22b-v1","messages":[{"role":"user","content":"hi"}]}'
    info = classify("POST", "/v1/chat/completions", body)
    assert job_of(info, body).model == "codestral:22b-v1"
    job = job_of(info, body, {"codestral:22b-v1": "codestral:22b"})
    assert job.model == "codestral:22b"
    loaded = NodeCost(model="codestral:22b")
    assert estimate("gpu-1", loaded, job).load == 0
    assert estimate("gpu-1", loaded, job_of(info, body)).load > 0


def test_a_non_streamed_answer_is_kept_for_learning() -> None:
    from balancer.framing import EndChecker

    c = EndChecker("none", "application/json; charset=utf-8", answer=True)
    c.feed(b'{"message":{"content":"a b"},"done":true,')
    assert c.complete and c.final is None  # not all of it yet
    c.feed(b'"eval_count":7,"eval_duration":100}')
    assert c.final == {"done": True, "eval_count": 7, "eval_duration": 100}
    o = EndChecker("none", "application/json", answer=True)
    o.feed(b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}')
    assert o.final == {"eval_count": 12, "streamed": False}
    e = EndChecker("none", "application/json", answer=True)
    e.feed(b'{"error":"model not found"}')
    assert e.final is None
    listing = EndChecker("none", "application/json")  # not an answer: nothing kept
    listing.feed(b'{"done":true,"eval_count":3}')
    assert listing.final is None
