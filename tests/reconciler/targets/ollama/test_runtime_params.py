"""One declaration of runtime parameters: the model that serves /v1 requests is built, a pass
loads nothing (pins are the balancer's), and a runner a user reloaded at another context is not drift."""

from __future__ import annotations

from typing import Any

import httpx

from reconciler.config import load_text
from reconciler.config.runtime import Runtime, runtime_params

from .conftest import add_nodes, apply, desired, failures, plan
from .test_converge import shown_params

SEED = """
[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
params = { num_ctx = 30000, num_predict = 29000, temperature = 0.1, top_p = 0.95, repeat_penalty = 1.15 }
[models."qwq:32b".openwebui]
params = { num_ctx = 14000, num_predict = 13000 }
"""


def test_the_projection_of_the_file() -> None:
    text = """version = 1
[balancer]
apply_model_params = "fill"
[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
params = { num_ctx = 30000, temperature = 0.1, keep_alive = "1h" }
[models.c30k]
from = "codestral:22b"
enforce_params = true
parameters = { num_ctx = 30000, repeat_penalty = 1.15 }
[models.c30k.openwebui]
params = { num_ctx = 30000, temperature = 0.2 }
[models."plain:1b"]
"""
    got = runtime_params(load_text(text, env={}))
    assert got == {
        "codestral:22b": Runtime({"num_ctx": 30000, "temperature": 0.1}, keep_loaded=True, keep_alive="1h",
                                 v1_model="codestral:22b-v1", v1_parameters={"num_ctx": 30000}),
        # its own parameters are baked in already: /v1 needs no other model
        "c30k": Runtime({"num_ctx": 30000, "repeat_penalty": 1.15, "temperature": 0.2}, enforce=True),
    }
    assert got["codestral:22b"].load_options == {"num_ctx": 30000}
    off = runtime_params(load_text(text.replace('"fill"', '"off"').replace("enforce_params = true", ""), env={}))
    assert off["codestral:22b"].v1_model is None


async def test_a_pass_builds_the_v1_models_and_loads_nothing(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], SEED)
    assert failures(await apply(state)) == []
    assert [r for r in node.write_requests() if r.is_load_call()] == []     # pins are the balancer's
    # the /v1 models carry what /v1 cannot send
    assert set(node.installed_models()) >= {"codestral:22b-v1", "qwq:32b-v1"}
    v1 = await shown_params(node, "codestral:22b-v1")
    assert v1["num_ctx"] == 30000 and v1["repeat_penalty"] == 1.15
    node.clear_requests()
    assert (await plan(state)).changes == ()
    assert node.write_requests() == []


async def test_a_user_reload_at_another_context_is_not_drift(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    state = desired([node], SEED)
    assert failures(await apply(state)) == []
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        # a client at another context reloads the model and unpins it: people's use, not drift
        r = await client.post("/api/generate", json={"model": "codestral:22b", "prompt": "x", "stream": False,
                                                      "options": {"num_ctx": 2048}, "keep_alive": "5m"})
        assert r.status_code == 200
        assert (await plan(state)).changes == ()


async def test_plan_says_what_the_balancer_does(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    notes = [n.message for n in (await plan(desired([node], SEED))).notes]
    assert ("balancer (apply_model_params = fill): fills declared parameters clients omit for codestral:22b, "
            "qwq:32b; always sends the declared num_ctx; sends keep_alive -1 for codestral:22b; sends /v1 "
            "requests to the derived models codestral:22b → codestral:22b-v1, qwq:32b → qwq:32b-v1") in notes
    off = desired([node], SEED, extra='[balancer]\napply_model_params = "off"')
    notes = [n.message for n in (await plan(off)).notes]
    assert any(n.startswith("balancer (apply_model_params = off): relays requests unchanged") for n in notes)
    nothing = desired([node], '[models."qwq:32b"]\n')
    assert not any(n.message.startswith("balancer") for n in (await plan(nothing)).notes)


def test_the_balancer_reads_the_same_projection() -> None:
    from balancer.params import ModelParams
    from reconciler.daemon.wiring import balancer_settings

    settings = balancer_settings(load_text("version = 1\n[balancer]\napply_model_params = \"enforce\"\n" + SEED, env={}))
    declared = {"num_ctx": 30000, "num_predict": 29000, "temperature": 0.1, "top_p": 0.95, "repeat_penalty": 1.15}
    assert settings.apply_model_params == "enforce"
    assert settings.model_params == {
        "codestral:22b": ModelParams(declared, keep_loaded=True, enforce=True, v1_model="codestral:22b-v1"),
        # a client naming the -v1 model directly gets the same values and cannot unpin the shared runner
        "codestral:22b-v1": ModelParams(declared, keep_loaded=True, enforce=True),
        "qwq:32b": ModelParams({"num_ctx": 14000, "num_predict": 13000}, enforce=True, v1_model="qwq:32b-v1"),
        "qwq:32b-v1": ModelParams({"num_ctx": 14000, "num_predict": 13000}, enforce=True),
    }
