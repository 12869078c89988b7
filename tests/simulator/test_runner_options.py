"""Load-time options and their defaults (reference/ollama-api.md §7 "Reload compares resolved
options", "Wrong option types", "num_ctx default"; §10 for the defaults)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator import Simulator, Timing

GiB = 1024**3


async def load(c: httpx.AsyncClient, model: str, **options: Any) -> httpx.Response:
    return await c.post("/api/generate", json={"model": model, "prompt": "hi", "stream": False,
                                               "options": options})


async def contexts(c: httpx.AsyncClient) -> dict[str, int]:
    return {m["name"]: m["context_length"] for m in (await c.get("/api/ps")).json()["models"]}


async def test_explicit_defaults_do_not_reload(sim: Simulator) -> None:
    """§7 "Reload compares resolved options": an explicit num_ctx 4096 (or num_batch 512,
    num_gpu -1) on a runner loaded with the defaults is the same runner."""
    node = await sim.add_node(models=["codestral:22b"], timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        cold = (await load(c, "codestral:22b")).json()["load_duration"]
        for opts in ({"num_ctx": 4096}, {"num_batch": 512}, {"num_gpu": -1, "main_gpu": 0},
                     {"num_ctx": 4096.0}):
            warm = (await load(c, "codestral:22b", **opts)).json()["load_duration"]
            assert warm < cold / 2, opts
        assert (await load(c, "codestral:22b", num_batch=256)).json()["load_duration"] == cold


async def test_reload_takes_the_requests_keep_alive_or_the_default(sim: Simulator) -> None:
    """§7 "Reload drops the pin": the new runner gets the request's keep_alive or
    OLLAMA_KEEP_ALIVE, never the old runner's."""
    node = await sim.add_node(models=["codestral:22b"], timing=Timing.instant(), keep_alive=60)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        await c.post("/api/generate", json={"model": "codestral:22b", "keep_alive": -1})
        assert int((await c.get("/api/ps")).json()["models"][0]["expires_at"][:4]) > 2200
        await load(c, "codestral:22b", num_ctx=30000)     # e.g. Open WebUI's first chat
        (runner,) = node.state.runners.values()
        assert (runner.num_ctx, runner.keep_alive_ns) == (30000, 60 * 10**9)
        await c.post("/api/generate", json={"model": "codestral:22b", "keep_alive": "2h",
                                            "options": {"num_ctx": 8192}})
        (runner,) = node.state.runners.values()
        assert (runner.num_ctx, runner.keep_alive_ns) == (8192, 7200 * 10**9)


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {}),                                            # the preload
    ("/api/chat", {"messages": []}),                                  # the chat preload
    ("/api/generate", {"prompt": "hi"}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
])
async def test_a_wrong_typed_stored_option_fails_every_path(sim: Simulator, path: str,
                                                            body: dict[str, Any]) -> None:
    """§7 "Wrong option types": every path that schedules a runner fails with 500."""
    node = await sim.add_node(models=["codestral:22b"], timing=Timing.instant())
    node.install("bad", from_="codestral:22b", parameters={"num_ctx": "30000"})
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        r = await c.post(path, json={"model": "bad", "stream": False, **body})
    assert r.status_code == 500
    assert 'option \\"num_ctx\\" must be of type integer' in r.text or \
        'option "num_ctx" must be of type integer' in r.text
    assert node.loaded_models() == []


@pytest.mark.parametrize("version,default,clamped", [
    ("0.13.5", 4096, 65536), ("0.15.4", 4096, 65536), ("0.15.5", 32768, 32768),
    ("0.16.0", 32768, 32768)])
async def test_num_ctx_default_and_clamp_switch_at_0_15_5(sim: Simulator, version: str,
                                                          default: int, clamped: int) -> None:
    """§7 "num_ctx default": 4096 up to v0.15.4; from v0.15.5 a VRAM tier (32768 at 24 GiB)
    and context_length clamped to the training context (codestral: 32768)."""
    node = await sim.add_node(models=["codestral:22b", "llama3.2:1b"], version=version,
                              vram=24 * GiB, timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        await load(c, "llama3.2:1b")
        assert (await contexts(c))["llama3.2:1b"] == default
        await load(c, "codestral:22b", num_ctx=65536)
        assert (await contexts(c))["codestral:22b"] == clamped


async def test_num_ctx_floors(sim: Simulator) -> None:
    """§10 num_ctx: "min 4; vision models min 2048"."""
    node = await sim.add_node(models=["llama3.2:1b", "llava:7b"], timing=Timing.instant())
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        await load(c, "llama3.2:1b", num_ctx=1)
        await load(c, "llava:7b", num_ctx=512)
        assert await contexts(c) == {"llama3.2:1b": 4, "llava:7b": 2048}
