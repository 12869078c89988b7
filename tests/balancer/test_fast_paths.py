"""The per-request shortcuts of the plain path give what the long way gives: the free-slot
check before a body is read, one JSON decode of a body for params and classification, and
the learned rates from one replace()."""
from __future__ import annotations

import json
import random
import sys
from typing import Any

import pytest

from balancer import NodeSpec
from balancer.classify import RequestInfo, classify
from balancer.cost import DEFAULT_RATES, Estimate, Job
from balancer.fleet import Fleet
from balancer.knowledge import Knowledge
from balancer.params import ModelParams, applied, apply_params
from balancer.scheduling import Reject, Reliability, decide


def test_any_free_says_what_the_blind_decide_says() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(0, 4)
        fleet = Fleet([NodeSpec(f"n{i}", f"http://127.0.0.1:{i + 1}",
                                max_concurrent=rng.randint(1, 3)) for i in range(n)])
        for node in fleet.nodes.values():
            node.in_flight = rng.randint(0, 3)
            node.remote = rng.choice([0, 0, 1, 2])
            node.reliability = rng.choice(list(Reliability))
            node.reachable = rng.choice([None, True, True, False])
            node.poll_error = "refused" if node.reachable is False else None
            node.foreign = rng.choice([None, None, None, "HTML"])
            if rng.random() < 0.2:
                node.draining["codestral:22b"] += 1
        blind = decide(fleet.snapshot(), RequestInfo("inference", "/api/chat", uses_slot=True))
        assert fleet.any_free() == (not (isinstance(blind, Reject) and blind.status == 503))


PARAMS = {"codestral:22b": ModelParams({"num_ctx": 30000, "temperature": 0.1}, keep_loaded=True,
                                       v1_model="codestral:22b-v1")}
BODIES: list[tuple[str, Any]] = [
    ("/api/chat", {"model": "codestral:22b", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/chat", {"model": "Codestral:22B", "options": {"num_ctx": 2048, "temperature": 0.5},
                   "messages": [{"role": "user", "content": "a"}, {"role": "assistant",
                                "content": "b"}, {"role": "user", "content": "c"}]}),
    ("/api/chat", {"model": "qwq:32b", "messages": []}),          # not declared
    ("/api/generate", {"model": "codestral:22b", "prompt": "x", "stream": False}),
    ("/v1/chat/completions", {"model": "codestral:22b", "stream": True,
                              "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/embed", {"model": "codestral:22b", "input": "x"}),
    ("/v1/embeddings", {"model": "codestral:22b", "input": "x"}),  # a path params don't touch
    ("/api/chat", [1, 2]),                                          # not an object
    ("/api/chat", None),                                            # no body
]


@pytest.mark.parametrize(("path", "body"), BODIES)
@pytest.mark.parametrize("mode", ["fill", "enforce", "off"])
def test_one_decode_classifies_as_two(path: str, body: Any, mode: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"" if body is None else json.dumps(body).encode()
    out, parsed = applied(path, raw, PARAMS, mode)  # type: ignore[arg-type]
    assert out == apply_params(path, raw, PARAMS, mode)  # type: ignore[arg-type]
    if parsed is not None:
        assert parsed == json.loads(out)
    slow = classify("POST", path, out)
    decodes: list[bytes] = []
    module = sys.modules["balancer.classify"]  # balancer.classify is also the function's name
    real = module._parse
    def counted(b: bytes) -> dict[str, Any]:
        decodes.append(b)
        parsed_again: dict[str, Any] = real(b)
        return parsed_again

    monkeypatch.setattr(module, "_parse", counted)
    assert classify("POST", path, out, parsed) == slow
    # a body params decoded as a JSON object is not decoded again
    assert decodes == ([] if parsed is not None else [out])
    if mode != "off" and path in ("/api/chat", "/api/generate") and isinstance(body, dict):
        assert parsed is not None


def _ended_the_long_way(k: Knowledge, key: int, name: str, final: dict[str, Any]) -> None:
    """knowledge.ended as merged (four replace() calls), for comparison."""
    from dataclasses import replace

    from balancer.knowledge import MIN_LEARN_TOKENS, MIN_LOAD, _mix, _seconds
    node = k.node(name)
    run = node.running.pop(key)
    model = run.job.model
    assert model is not None
    first = model not in node.rates
    r = node.rates.get(model, DEFAULT_RATES)
    mix = (lambda old, sample: sample) if first else _mix
    load = _seconds(final.get("load_duration"))
    if load is not None and load >= MIN_LOAD:
        r = replace(r, load=mix(r.load, load))
    prefill = _seconds(final.get("prompt_eval_duration"))
    if prefill and run.estimate.uncached_tokens >= MIN_LEARN_TOKENS:
        r = replace(r, prefill=mix(r.prefill, run.estimate.uncached_tokens / prefill))
    count, gen = final.get("eval_count"), _seconds(final.get("eval_duration"))
    if isinstance(count, int) and count > 0:
        r = replace(r, answer=mix(r.answer, count))
        if gen:
            r = replace(r, gen=mix(r.gen, count / gen))
    node.rates[model] = r


def test_learned_rates_are_those_of_the_long_way() -> None:
    finals: list[dict[str, Any]] = [{"load_duration": 8e9, "prompt_eval_duration": 2e8, "eval_count": 250,
               "eval_duration": 8e9},
              {"load_duration": 1e7, "prompt_eval_duration": 1e8, "eval_count": 40,
               "eval_duration": 1e9},
              {"eval_count": 0}, {"load_duration": 12e9}, {"prompt_eval_duration": 0}]
    ours, theirs = Knowledge(), Knowledge()
    est = Estimate("n", 0.0, 0.0, 0.0, 0.0, 1.0, 0, 500)
    for key, final in enumerate(finals * 3):
        for k in (ours, theirs):
            k.started(key, "n", Job("codestral:22b", None, 600, None), est, 0.0)
        ours.ended(key, "n", final)
        _ended_the_long_way(theirs, key, "n", final)
        assert ours.node("n").rates == theirs.node("n").rates
    assert ours.node("n").rates["codestral:22b"] != DEFAULT_RATES
