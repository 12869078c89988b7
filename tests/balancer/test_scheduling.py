"""Node choice as tables: (snapshot, request) -> decision. No sockets."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from balancer.classify import RequestInfo, classify
from balancer.scheduling import (Event, NodeView, Pick, Reject, Reliability as R, Snapshot,
                                 Wait, decide, next_reliability)

CHAT = RequestInfo("inference", "/api/chat", "codestral:22b", "codestral:22b", uses_slot=True)
ANY = RequestInfo("inference", "/api/chat", None, None, uses_slot=True)
GET = RequestInfo("other", "/api/version")


def nodes(*specs: tuple) -> Snapshot:
    """(name, reliability, in_flight[, models[, loaded]]) -> snapshot in list order."""
    views = []
    for i, spec in enumerate(specs):
        name, rel, busy = spec[:3]
        models = frozenset(spec[3]) if len(spec) > 3 and spec[3] is not None else None
        loaded = frozenset(spec[4]) if len(spec) > 4 else frozenset()
        views.append(NodeView(name, i, rel, busy, 1, models, loaded))
    return Snapshot(tuple(views))


CASES = [
    # reference behaviour (model-less, every node may serve)
    ("first reliable in list order", nodes(("a", R.RELIABLE, 0), ("b", R.RELIABLE, 0)), ANY,
     Pick("a", "reliable")),
    ("busy node skipped", nodes(("a", R.RELIABLE, 1), ("b", R.RELIABLE, 0)), ANY,
     Pick("b", "reliable")),
    ("reliable before unreliable", nodes(("a", R.UNRELIABLE, 0), ("b", R.RELIABLE, 0)), ANY,
     Pick("b", "reliable")),
    ("unreliable gets a second chance", nodes(("a", R.UNRELIABLE, 0), ("b", R.RELIABLE, 1)), ANY,
     Pick("a", "second chance", second_chance=True)),
    ("second chance goes round in turn",
     nodes(("a", R.SECOND_CHANCE_GIVEN, 0), ("b", R.UNRELIABLE, 0)), ANY,
     Pick("b", "second chance", second_chance=True)),
    ("every unreliable had its chance: new round",
     nodes(("a", R.SECOND_CHANCE_GIVEN, 0), ("b", R.SECOND_CHANCE_GIVEN, 0)), ANY,
     Pick("a", "second chance, new round", second_chance=True, new_round=True)),
    ("all busy: 503 at once", nodes(("a", R.RELIABLE, 1), ("b", R.UNRELIABLE, 1)), ANY,
     Reject(503, "all_busy", "no available servers: every node is busy")),
    ("no nodes", nodes(), ANY,
     Reject(503, "no_nodes", "no available servers: the balancer has no nodes")),
    # model awareness
    ("only nodes that have the model",
     nodes(("a", R.RELIABLE, 0, ["qwq:32b"]), ("b", R.RELIABLE, 0, ["codestral:22b"])), CHAT,
     Pick("b", "reliable")),
    ("loaded before on disk",
     nodes(("a", R.RELIABLE, 0, ["codestral:22b"]),
           ("b", R.RELIABLE, 0, ["codestral:22b"], ["codestral:22b"])), CHAT,
     Pick("b", "reliable")),
    ("known before not yet polled",
     nodes(("a", R.RELIABLE, 0, None), ("b", R.RELIABLE, 0, ["codestral:22b"])), CHAT,
     Pick("b", "reliable")),
    ("nobody has it: Ollama's 404", nodes(("a", R.RELIABLE, 0, ["qwq:32b"])), CHAT,
     Reject(404, "no_model", "model 'codestral:22b' not found")),
    ("the node with the model is busy: 503, not another node",
     nodes(("a", R.RELIABLE, 1, ["codestral:22b"]), ("b", R.RELIABLE, 0, ["qwq:32b"])), CHAT,
     Reject(503, "all_busy", "no available servers: every node is busy")),
    # light requests don't need a free slot
    ("GET goes to a busy node if needed", nodes(("a", R.RELIABLE, 1)), GET, Pick("a", "reliable")),
    ("GET prefers an idle node", nodes(("a", R.RELIABLE, 1), ("b", R.RELIABLE, 0)), GET,
     Pick("b", "reliable")),
]


@pytest.mark.parametrize("name,snapshot,request_,expected", CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, snapshot: Snapshot, request_: RequestInfo, expected: object) -> None:
    assert decide(snapshot, request_) == expected


def test_tried_nodes_are_skipped_and_exhaustion_is_502() -> None:
    snap = nodes(("a", R.RELIABLE, 0), ("b", R.RELIABLE, 0))
    assert decide(snap, ANY, frozenset({"a"})) == Pick("b", "reliable")
    assert decide(snap, ANY, frozenset({"a", "b"})).status == 502  # type: ignore[union-attr]


def test_queue_waits_instead_of_503() -> None:
    snap = nodes(("a", R.RELIABLE, 1))
    assert isinstance(decide(snap, ANY, can_wait=True), Wait)


def test_draining_node_is_not_used_for_that_model() -> None:
    a = NodeView("a", 0, models=frozenset({"codestral:22b"}), draining=frozenset({"codestral:22b"}))
    b = NodeView("b", 1, models=frozenset({"codestral:22b"}))
    assert decide(Snapshot((a, b)), CHAT) == Pick("b", "reliable")
    assert decide(Snapshot((a,)), CHAT).code == "all_busy"  # type: ignore[union-attr]


def test_parallel_slots_and_speed_tier() -> None:
    slow = NodeView("slow", 0, in_flight=1, max_concurrent=2)
    fast = NodeView("fast", 1, in_flight=0, max_concurrent=1, speed=2)
    assert decide(Snapshot((slow, fast)), ANY) == Pick("fast", "reliable")
    assert decide(Snapshot((slow,)), ANY) == Pick("slow", "reliable")


def test_request_model_is_normalised_like_ollama() -> None:
    info = classify("POST", "/api/chat", b'{"model":"Codestral:22B","messages":[]}')
    snap = nodes(("a", R.RELIABLE, 0, ["codestral:22b"]))
    assert decide(snap, info) == Pick("a", "reliable")
    info = classify("POST", "/api/generate", b'{"model":"qwq"}')
    assert decide(nodes(("a", R.RELIABLE, 0, ["qwq:latest"])), info) == Pick("a", "reliable")


TRANSITIONS = [
    (R.RELIABLE, Event.COMPLETED, R.RELIABLE),
    (R.UNRELIABLE, Event.COMPLETED, R.RELIABLE),
    (R.SECOND_CHANCE_GIVEN, Event.COMPLETED, R.RELIABLE),
    (R.RELIABLE, Event.FAILED, R.UNRELIABLE),
    (R.UNRELIABLE, Event.FAILED, R.UNRELIABLE),
    (R.SECOND_CHANCE_GIVEN, Event.FAILED, R.SECOND_CHANCE_GIVEN),
    (R.RELIABLE, Event.CLIENT_CANCELLED, R.RELIABLE),
    (R.UNRELIABLE, Event.CLIENT_CANCELLED, R.UNRELIABLE),
    (R.SECOND_CHANCE_GIVEN, Event.CLIENT_CANCELLED, R.SECOND_CHANCE_GIVEN),
    (R.UNRELIABLE, Event.SECOND_CHANCE, R.SECOND_CHANCE_GIVEN),
    (R.RELIABLE, Event.SECOND_CHANCE, R.RELIABLE),
]


@pytest.mark.parametrize("before,event,after", TRANSITIONS)
def test_next_reliability(before: R, event: Event, after: R) -> None:
    assert next_reliability(before, event) is after


MODELS = ["a:1", "b:1", "c:1"]
node_views = st.builds(
    lambda i, rel, busy, slots, models, loaded, draining: NodeView(
        f"n{i}", i, rel, busy, slots, models, loaded, draining=draining),
    st.integers(0, 0), st.sampled_from(list(R)), st.integers(0, 3), st.integers(1, 3),
    st.one_of(st.none(), st.frozensets(st.sampled_from(MODELS))),
    st.frozensets(st.sampled_from(MODELS)), st.frozensets(st.sampled_from(MODELS)))


@given(st.lists(node_views, max_size=5), st.one_of(st.none(), st.sampled_from(MODELS)))
def test_never_a_busy_draining_or_modelless_node(views: list[NodeView], model: str | None) -> None:
    views = [NodeView(**{**v.__dict__, "name": f"n{i}", "order": i}) for i, v in enumerate(views)]
    request = RequestInfo("inference", "/api/chat", model, model, uses_slot=True)
    decision = decide(Snapshot(tuple(views)), request)
    eligible = [v for v in views if not v.busy
                and (model is None or ((v.models is None or model in v.models)
                                       and model not in v.draining))]
    if isinstance(decision, Pick):
        assert decision.node in {v.name for v in eligible}
    else:
        assert not eligible


def test_unknown_model_after_unpolled_nodes_failed_is_404() -> None:
    snap = nodes(("dead", R.UNRELIABLE, 0, None), ("ok", R.RELIABLE, 0, ["qwq:32b"]))
    assert decide(snap, CHAT) == Pick("dead", "second chance", second_chance=True)
    assert decide(snap, CHAT, frozenset({"dead"})).status == 404  # type: ignore[union-attr]


def _chat(messages: list[tuple[str, str]], path: str = "/api/chat") -> RequestInfo:
    import json

    body = {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}
    return classify("POST", path, json.dumps(body).encode())


def test_conversation_affinity_prefers_the_node_with_the_kv_cache() -> None:
    turn2 = [("system", "s"), ("user", "u1"), ("assistant", "a1"), ("user", "u2")]
    turn3 = turn2 + [("assistant", "a2"), ("user", "u3")]
    prev = _chat(turn2).conversation
    a = NodeView("a", 0, models=frozenset({"m:latest"}), loaded=frozenset({"m:latest"}))
    b = NodeView("b", 1, models=frozenset({"m:latest"}), conversation=prev)
    assert decide(Snapshot((a, b)), _chat(turn3)) == Pick(
        "b", "reliable, continues its last conversation")
    # an unrelated or too short history does not count
    assert decide(Snapshot((a, b)), _chat([("user", "other")] + turn3[1:])).node == "a"
    short = _chat([("user", "u1"), ("assistant", "a1")]).conversation
    b2 = NodeView("b", 1, models=frozenset({"m:latest"}), conversation=short)
    assert decide(Snapshot((a, b2)), _chat(turn2)).node == "a"
    # a busy affinity node is not waited for
    b3 = NodeView("b", 1, in_flight=1, models=frozenset({"m:latest"}), conversation=prev)
    assert decide(Snapshot((a, b3)), _chat(turn3)).node == "a"


def test_conversation_is_normalised_across_apis() -> None:
    import json

    native = _chat([("system", "s"), ("user", "u1"), ("assistant", "a1"), ("user", "u2")])
    openai_parts = classify("POST", "/v1/chat/completions", json.dumps({
        "model": "m", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "u1"}]},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]}).encode())
    anthropic = classify("POST", "/v1/messages", json.dumps({
        "model": "m", "system": "s", "max_tokens": 5, "messages": [
            {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": [{"type": "text", "text": "u2"}]}]}).encode())
    responses = classify("POST", "/v1/responses", json.dumps({
        "model": "m", "instructions": "s", "input": [
            {"type": "message", "role": "user", "content": "u1"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "a1"}]},
            {"type": "message", "role": "user", "content": "u2"}]}).encode())
    assert native.conversation == openai_parts.conversation == anthropic.conversation \
        == responses.conversation
