"""balancer/params.py as tables: each dialect the balancer relays × each mode (fill, enforce,
off), the keep_alive pin, num_ctx always declared, and /v1 sent to the derived model."""
from __future__ import annotations

import json
from typing import Any

import pytest

from balancer.params import ModelParams, apply_params

DECLARED = {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1, "top_p": 0.95,
            "repeat_penalty": 1.15, "stop": ["[END]"]}
PARAMS = {
    "codestral:22b": ModelParams(DECLARED, keep_loaded=True, v1_model="codestral:22b-v1"),
    "qwq:32b": ModelParams({"num_ctx": 14000, "num_predict": 13000}, keep_alive="30m",
                           v1_model="qwq:32b-v1"),
    "strict:latest": ModelParams({"temperature": 0.1}, enforce=True),
}
MSG = [{"role": "user", "content": "hi"}]


def run(path: str, body: dict[str, Any], mode: str = "fill", has: bool = True) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    out = apply_params(path, raw, PARAMS, mode, lambda _: has)  # type: ignore[arg-type]
    if out == raw:
        return body
    parsed: dict[str, Any] = json.loads(out)
    return parsed


# native: options filled / enforced; num_ctx always the declared one; keep_alive pinned
NATIVE_CASES = [
    # (mode, client options, expected options)
    ("fill", None, DECLARED),
    ("fill", {"temperature": 0.7, "num_ctx": 2048},
     {**DECLARED, "temperature": 0.7}),            # the client's sampling kept, its num_ctx not
    ("enforce", {"temperature": 0.7, "num_ctx": 2048, "seed": 3}, {**DECLARED, "seed": 3}),
    ("off", {"temperature": 0.7}, {"temperature": 0.7}),
]


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize(("mode", "sent", "want"), NATIVE_CASES)
def test_native_options(path: str, mode: str, sent: dict[str, Any] | None,
                        want: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": "codestral:22b", "messages": MSG, "keep_alive": "5m"}
    if sent is not None:
        body["options"] = dict(sent)
    out = run(path, body, mode)
    assert out.get("options") == want
    assert out["keep_alive"] == ("5m" if mode == "off" else -1)


@pytest.mark.parametrize(("mode", "sent", "want"), [
    ("fill", None, "30m"), ("fill", "5m", "5m"), ("enforce", "5m", "30m"), ("off", None, None)])
def test_keep_alive_of_a_model_not_kept_loaded(mode: str, sent: str | None, want: str | None) -> None:
    body: dict[str, Any] = {"model": "qwq:32b", "prompt": "x"}
    if sent is not None:
        body["keep_alive"] = sent
    assert run("/api/generate", body, mode).get("keep_alive") == want


def test_model_names_match_as_ollama_matches_them() -> None:
    out = run("/api/chat", {"model": "Codestral:22B", "messages": MSG})
    assert out["options"]["num_ctx"] == 30000 and out["keep_alive"] == -1
    assert run("/api/chat", {"model": "strict", "messages": MSG,
                             "options": {"temperature": 1.5}})["options"] == {"temperature": 0.1}


@pytest.mark.parametrize("body", [
    {"model": "other:7b", "messages": MSG, "keep_alive": "5m"},   # not declared
    {"messages": MSG},                                             # no model
    {"model": "codestral:22b", "options": "junk"},                 # Ollama answers that 400
])
def test_bodies_left_alone(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    out = apply_params("/api/chat", raw, PARAMS, "enforce", lambda _: True)
    if "options" in body:   # only the pin is added
        assert json.loads(out) == {**body, "keep_alive": -1}
    else:
        assert out == raw
    assert apply_params("/api/chat", b"not json", PARAMS, "fill") == b"not json"
    assert apply_params("/api/tags", raw, PARAMS, "fill") == raw


# /v1 dialects: (path, client body beyond model, mode, expected fields)
V1_CASES = [
    ("/v1/chat/completions", {"messages": MSG}, "fill",
     {"temperature": 0.1, "top_p": 0.95, "max_tokens": 29000, "stop": ["[END]"]}),
    ("/v1/chat/completions", {"messages": MSG, "temperature": 0.9, "max_completion_tokens": 50},
     "fill", {"temperature": 0.9, "top_p": 0.95, "max_completion_tokens": 50, "max_tokens": 50}),
    ("/v1/chat/completions", {"messages": MSG, "temperature": 0.9, "max_completion_tokens": 50},
     "enforce", {"temperature": 0.1, "top_p": 0.95, "max_tokens": 29000}),
    ("/v1/completions", {"prompt": "def f("}, "fill",
     {"temperature": 0.1, "top_p": 0.95, "max_tokens": 29000}),
    ("/v1/completions", {"prompt": "def f(", "top_p": 0.5}, "enforce", {"top_p": 0.95}),
    ("/v1/responses", {"input": "hi"}, "fill",
     {"temperature": 0.1, "top_p": 0.95, "max_output_tokens": 29000}),
    ("/v1/responses", {"input": "hi", "temperature": 1.0}, "enforce", {"temperature": 0.1}),
    ("/v1/messages", {"messages": MSG, "max_tokens": 100}, "fill",
     {"temperature": 0.1, "top_p": 0.95, "max_tokens": 100, "stop_sequences": ["[END]"]}),
    ("/v1/messages", {"messages": MSG, "max_tokens": 100, "temperature": 1.0}, "enforce",
     {"temperature": 0.1, "max_tokens": 29000}),
]


@pytest.mark.parametrize(("path", "sent", "mode", "want"), V1_CASES)
def test_v1_dialects(path: str, sent: dict[str, Any], mode: str, want: dict[str, Any]) -> None:
    out = run(path, {"model": "codestral:22b", **sent}, mode)
    for key, value in want.items():
        assert out[key] == value, key
    if mode == "enforce" and "max_tokens" in want:
        assert "max_completion_tokens" not in out
    # what /v1 cannot carry goes to the derived model that has it baked in; no keep_alive field
    assert out["model"] == "codestral:22b-v1"
    assert "keep_alive" not in out and "options" not in out


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses",
                                  "/v1/messages"])
def test_v1_off_changes_nothing(path: str) -> None:
    body = {"model": "codestral:22b", "messages": MSG, "max_tokens": 5}
    assert run(path, body, "off") == body


def test_v1_keeps_the_model_while_no_node_has_the_derived_one() -> None:
    out = run("/v1/chat/completions", {"model": "codestral:22b", "messages": MSG}, has=False)
    assert out["model"] == "codestral:22b" and out["temperature"] == 0.1


def test_unlimited_num_predict_has_no_v1_spelling() -> None:
    params = {"m:latest": ModelParams({"num_predict": -1, "temperature": 0.2})}
    raw = json.dumps({"model": "m", "messages": MSG}).encode()
    out = json.loads(apply_params("/v1/chat/completions", raw, params, "enforce"))
    assert out == {"model": "m", "messages": MSG, "temperature": 0.2}
