"""Declared parameters through a balancer to a simulated node, in every dialect and mode: what
the node ran with (its effective options) is what the file declares."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from balancer.params import ModelParams

from .conftest import MakeBalancer

DECLARED = {"num_ctx": 30000, "num_predict": 64, "temperature": 0.1, "top_p": 0.95, "repeat_penalty": 1.15}
PARAMS = {"codestral:22b": ModelParams(DECLARED, keep_loaded=True, v1_model="codestral:22b-v1")}
MSGS = [{"role": "user", "content": "hi"}]
CLIENT = {"temperature": 0.7, "top_p": 0.5}      # what a client that sets its own values sends
BODIES: dict[str, dict[str, Any]] = {
    "/api/chat": {"messages": MSGS, "stream": False},
    "/api/generate": {"prompt": "hi", "stream": False},
    "/v1/chat/completions": {"messages": MSGS},
    "/v1/completions": {"prompt": "def f("},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"messages": MSGS, "max_tokens": 64},
}


def with_client_values(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.startswith("/api/"):
        return {**body, "options": dict(CLIENT)}
    return {**body, **CLIENT}


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("mode", ["fill", "enforce", "off"])
async def test_what_the_node_ran_with(sim: Any, make_balancer: MakeBalancer, path: str, mode: str) -> None:
    node = await sim.add_node("gpu-1", models=["codestral:22b"], version="0.14.0")
    node.install("codestral:22b-v1", from_="codestral:22b", parameters={"num_ctx": 30000, "repeat_penalty": 1.15})
    b = await make_balancer([node], apply_model_params=mode, model_params=PARAMS)
    await b.refresh()
    async with aiohttp.ClientSession() as http:
        for client_sets in (False, True):
            body = {"model": "codestral:22b", **BODIES[path]}
            if client_sets:
                body = with_client_values(path, body)
            node.last_options = {}
            async with http.post(b.url + path, json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()
            ran = node.last_options
            if mode == "off":
                assert ran.get("temperature") != 0.1 and ran.get("repeat_penalty") != 1.15
                continue
            want = dict(CLIENT) if client_sets and mode == "fill" else {"temperature": 0.1, "top_p": 0.95}
            assert {k: ran.get(k) for k in want} == want
            # what the dialect cannot carry arrives too (baked into the -v1 model for /v1)
            assert ran.get("repeat_penalty") == 1.15 and ran.get("num_predict") == 64
    if mode != "off":
        [runner] = node.state.runners.values()
        assert runner.num_ctx == 30000
