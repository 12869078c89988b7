"""What Ollama's OpenAI layer sends as options (reference/ollama-api.md §9 "Surprise", §7 on
`max_completion_tokens` and `reasoning_effort` in 0.13.5)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator import SimNode, Simulator, Timing

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def tuned(sim: Simulator) -> SimNode:
    node = await sim.add_node(models=["codestral:22b", "qwen3:32b"], timing=Timing.instant())
    node.install("tuned", from_="codestral:22b", parameters={"temperature": 0.1, "top_p": 0.5})
    return node


async def post(node: SimNode, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        return await c.post(path, json=body)


@pytest.mark.parametrize("path,body,top_p", [
    ("/v1/chat/completions", {"messages": USER}, 1.0),
    ("/v1/completions", {"prompt": "def f("}, 1.0),
    ("/v1/responses", {"input": "hi"}, 0.5),          # top_p is left to the model there
])
async def test_v1_fills_temperature_over_the_models_own(tuned: SimNode, path: str,
                                                       body: dict[str, Any], top_p: float) -> None:
    """§9: when the client omits them the layer sends temperature (and top_p) 1.0, which
    override the model's PARAMETERs; a client's own value passes."""
    assert (await post(tuned, path, {"model": "tuned", **body})).status_code == 200
    assert (tuned.last_options["temperature"], tuned.last_options["top_p"]) == (1.0, top_p)
    await post(tuned, path, {"model": "tuned", "temperature": 0.3, "top_p": 0.7, **body})
    assert (tuned.last_options["temperature"], tuned.last_options["top_p"]) == (0.3, 0.7)


async def test_v1_ignores_max_completion_tokens(tuned: SimNode) -> None:
    """§7: 0.13.5's /v1/chat/completions has no max_completion_tokens field."""
    r = await post(tuned, "/v1/chat/completions",
                   {"model": "tuned", "messages": USER, "max_completion_tokens": 3})
    assert r.json()["usage"]["completion_tokens"] == tuned.reply_tokens
    assert "num_predict" not in tuned.last_options
    r = await post(tuned, "/v1/chat/completions", {"model": "tuned", "messages": USER, "max_tokens": 3})
    assert r.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("model,effort,status,message", [
    ("qwen3:32b", "high", 400, 'think value "high" is not supported for this model'),
    ("tuned", "low", 400, '"tuned" does not support thinking'),
    ("qwen3:32b", "none", 200, None),
])
async def test_v1_reasoning_effort_strings_are_for_gpt_oss_only(
        tuned: SimNode, model: str, effort: str, status: int, message: str | None) -> None:
    """§7: a `reasoning_effort` string is a 400 on /v1/chat/completions except for gpt-oss."""
    r = await post(tuned, "/v1/chat/completions",
                   {"model": model, "messages": USER, "reasoning_effort": effort})
    assert r.status_code == status
    if message is not None:
        assert r.json()["error"]["message"] == message
