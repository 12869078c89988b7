"""Issue 25 (items 4, 7, 8): no way around a guard by key case, reliability only on node faults,
malformed or hostile bodies answered cleanly. Simulated nodes on 127.0.0.1; the simulator
reads JSON as Ollama's Go handlers do (keys case-insensitive, the later one wins)."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from balancer.params import ModelParams

from .conftest import CHAT, state

pytestmark = pytest.mark.timeout(30)

DECLARED = {"num_ctx": 30000, "temperature": 0.1}
ENFORCED = {"codestral:22b": ModelParams(DECLARED, enforce=True)}


async def _run(http: Any, url: str, body: bytes) -> int:
    async with http.post(url + "/api/chat", data=body,
                         headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status


# -- item 4: canonical JSON as Go reads it -------------------------------------------------
@pytest.mark.parametrize("body", [
    # a second "Options" beside "options": Go merges both, the later keys win
    b'{"model":"codestral:22b","messages":[{"role":"user","content":"hi"}],"stream":false,'
    b'"options":{"temperature":0.1},"Options":{"temperature":1.9,"num_ctx":99999}}',
    # the long s folds to "s" (and the Kelvin sign to "k"): "option\\u017f" is options for Go
    b'{"model":"codestral:22b","messages":[{"role":"user","content":"hi"}],"stream":false,'
    b'"options":{"temperature":0.1},"option\\u017f":{"temperature":1.9,"num_ctx":99999}}',
    # "options" twice, exactly: Go merges the two maps (Python kept the last one already)
    b'{"model":"codestral:22b","messages":[{"role":"user","content":"hi"}],"stream":false,'
    b'"options":{"temperature":1.9,"num_ctx":99999},"options":{"temperature":0.1}}',
])
async def test_enforced_params_cannot_be_bypassed_by_key_spelling(sim, make_balancer, http,
                                                                   body: bytes) -> None:
    node = await sim.add_node("gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], apply_model_params="enforce", model_params=ENFORCED)
    assert await _run(http, b.url, body) == 200
    assert node.last_options.get("temperature") == 0.1
    [runner] = node.state.runners.values()
    assert runner.num_ctx == 30000


async def test_a_second_model_key_cannot_change_the_model(sim, make_balancer, http) -> None:
    """The balancer routes and applies parameters by the model the node will run."""
    node = await sim.add_node("gpu-1", models=["codestral:22b", "qwq:32b"])
    b = await make_balancer([node], apply_model_params="enforce", model_params=ENFORCED)
    body = (b'{"model":"qwq:32b","Model":"codestral:22b","stream":false,'
            b'"messages":[{"role":"user","content":"hi"}],"options":{"temperature":1.9}}')
    assert await _run(http, b.url, body) == 200
    [runner] = node.state.runners.values()
    assert runner.model.name.model == "codestral"
    assert node.last_options.get("temperature") == 0.1 and runner.num_ctx == 30000


# -- item 7: one client's bad request is not the nodes' fault -------------------------------
async def test_a_bad_option_fails_alike_everywhere_and_marks_no_node(sim, make_balancer,
                                                                     http) -> None:
    nodes = [await sim.add_node(name=f"gpu-{i}", models=["codestral:22b"]) for i in (1, 2, 3)]
    b = await make_balancer(nodes)
    bad = {**CHAT, "options": {"temperature": "hot"}}
    async with http.post(b.url + "/api/chat", json=bad) as r:
        assert r.status == 500
        assert (await r.json())["error"] == 'option "temperature" must be of type float32'
    assert [state(b, n.name).reliability for n in nodes] == ["Reliable"] * 3
    assert b.metrics.failures_total == 0
    async with http.post(b.url + "/api/chat", json={**CHAT, "stream": False}) as r:
        assert r.status == 200


async def test_an_error_only_one_node_gives_still_counts_against_it(sim, make_balancer,
                                                                    http) -> None:
    from simulator import Fault

    nodes = [await sim.add_node(name=f"gpu-{i}", models=["codestral:22b"]) for i in (1, 2)]
    nodes[0].set_fault(Fault.HTTP_500)
    b = await make_balancer(nodes)
    async with http.post(b.url + "/api/chat", json={**CHAT, "stream": False}) as r:
        assert r.status == 200
    assert state(b, "gpu-1").reliability == "Unreliable"
    assert state(b, "gpu-2").reliability == "Reliable"


# -- item 8: a deeply nested body --------------------------------------------------------
async def test_deeply_nested_json_is_a_clean_400(sim, make_balancer, http, caplog) -> None:
    node = await sim.add_node("gpu-1", models=["codestral:22b"])
    b = await make_balancer([node], apply_model_params="enforce", model_params=ENFORCED)
    caplog.set_level(logging.INFO)
    for path in ("/api/chat", "/v1/chat/completions", "/api/show"):
        async with http.post(b.url + path, data=b"[" * 100_000,
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, path
            text = await r.text()
            assert "nested too deeply" in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not [q for q in node.requests if q.path in ("/api/chat", "/v1/chat/completions")]


# -- item 8: a node whose polls answer 500 -------------------------------------------------
async def test_node_whose_polls_answer_500_is_no_candidate(sim, make_balancer, http) -> None:
    from simulator import Fault

    bad = await sim.add_node(name="bad", models=["codestral:22b"])
    ok = await sim.add_node(name="ok", models=["codestral:22b"])
    bad.set_fault(Fault.HTTP_500, paths=("/api/",))
    b = await make_balancer([bad, ok])
    assert "HTTP 500" in (state(b, "bad").unfit or "")
    for _ in range(2):
        async with http.post(b.url + "/api/chat", json={**CHAT, "stream": False}) as r:
            assert r.status == 200
    assert not [q for q in bad.requests if q.path == "/api/chat"]
    assert b.metrics.failures_total == 0
    bad.clear_fault()
    await b.refresh()
    assert state(b, "bad").unfit is None


# -- item 8: a newline in a node's error text cannot forge a log line ----------------------
FORGED = "2026-01-01 00:00:00,000 ERROR forged"


async def test_a_newline_in_a_nodes_error_cannot_forge_a_log_line() -> None:
    import asyncio
    import os
    import socket
    import sys

    from aiohttp import web

    async def broken(request: web.BaseRequest) -> web.Response:
        # its error text as is, not JSON-escaped: a real newline and a terminal escape
        return web.Response(status=500, text=f"boom\n{FORGED}\r\x1b[2J",
                            content_type="application/json")

    runner = web.ServerRunner(web.Server(broken), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    node_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--server", f"{node_url}=gpu-1",
        "--bind", f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        lines: list[bytes] = []
        while not lines or b"listening" not in lines[-1]:
            lines.append(await asyncio.wait_for(proc.stderr.readline(), 10))
        text = b"".join(lines).decode()
        assert "boom\\n" + FORGED + "\\r\\x1b[2J" in text  # shown, escaped, on its line
        assert not [ln for ln in text.splitlines() if ln.startswith(FORGED)]
        assert "\x1b" not in text
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await runner.cleanup()


def test_the_daemons_text_log_lines_escape_controls_too() -> None:
    from reconciler.daemon import logs

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        logs.setup()
        record = logging.LogRecord("balancer", logging.WARNING, __file__, 1,
                                   "node said: %s", (f"x\n{FORGED}",), None)
        line = root.handlers[0].format(record)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert "\n" not in line and line.endswith("node said: x\\n" + FORGED)


# -- item 8: the bodies held at once are bounded in total ----------------------------------
async def test_eight_big_bodies_at_once_stay_within_the_budget() -> None:
    """Eight 24 MB chats at once (max_body 32 MiB): before, the balancer's peak memory grew
    by ~650 MB (every body held whole, twice, while decoded); now at most four bodies' worth
    of them are held (the default budget), the rest wait for room."""
    import asyncio
    import json
    import os
    import socket
    import sys

    import aiohttp
    from aiohttp import web

    async def node(request: web.BaseRequest) -> web.Response:
        if request.path in ("/api/tags", "/api/ps"):
            return web.json_response({"models": [{"name": "codestral:22b"}]})
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
        return web.json_response({"model": "codestral:22b", "done": True,
                                  "message": {"role": "assistant", "content": str(size)}})

    runner = web.ServerRunner(web.Server(node), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--server",
        f"http://127.0.0.1:{runner.addresses[0][1]}=gpu-1", "--bind", f"127.0.0.1:{port}",
        "--queue-timeout", "30", "--max-body-mb", "32", stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        while b"listening" not in await asyncio.wait_for(proc.stderr.readline(), 10):
            pass
        drain = asyncio.create_task(proc.stderr.read())
        body = json.dumps({"model": "codestral:22b", "stream": False, "messages": [
            {"role": "user", "content": "x" * 24_000_000}]}).encode()

        def peak() -> int:
            with open(f"/proc/{proc.pid}/status") as f:
                return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) * 1024

        before = peak()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async def one() -> int:
                async with http.post(f"http://127.0.0.1:{port}/api/chat", data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    return r.status
            statuses = await asyncio.gather(*(one() for _ in range(8)))
        assert set(statuses) <= {200, 503} and 200 in statuses
        assert peak() - before < 350 * 2**20
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        drain.cancel()
        await runner.cleanup()


async def test_a_full_budget_answers_503_without_a_queue(sim, make_balancer, http) -> None:
    """Without a queue timeout a body that finds no room is answered at once, Retry-After 1;
    the room comes back when the bodies' requests end."""
    import asyncio

    from simulator import Timing

    nodes = [await sim.add_node(name=f"gpu-{i}", models=["codestral:22b"],
                                timing=Timing(prompt_tps=1e9, gen_tps=10.0)) for i in (1, 2, 3)]
    for n in nodes:
        n.reply_tokens = 10
    b = await make_balancer(nodes, max_body=2 * 2**20, bodies_budget=int(2.5 * 2**20),
                            silence_timeout=20.0)
    big = {**CHAT, "stream": False, "messages": [{"role": "user", "content": "x" * 2_000_000}]}

    async def one() -> tuple[int, str | None]:
        async with http.post(b.url + "/api/chat", json=big) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After")

    results = await asyncio.gather(*(one() for _ in range(3)))
    assert sorted(s for s, _ in results) == [200, 503, 503]
    assert all(ra == "1" for s, ra in results if s == 503)
    assert await one() == (200, None)
