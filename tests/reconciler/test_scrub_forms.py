"""Secrets do not leak past the scrubber when a server's text is cut, or echoes them escaped,
and a URL's credentials (user:password@, ?token=) are never shown, not even when written
literally in the file: plan output, /status, the status page and `ollafleet status --json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from reconciler import cli, status_cli
from reconciler.scrub import REDACTED, remember, scrub
from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.cluster.conftest import free_port
from tests.reconciler.daemon.test_service import network

# a `"` and a `\`: a server that echoes it inside JSON text writes \" and \\
KEY = 'sk-"0123456789\\abcdef-very-secret'
CORE = ("0123456789", "abcdef-very")     # no part of the key may show
SHOWN = 14                                # characters of the key before the old cut


def body(form: str, auth: str) -> tuple[str, bytes]:
    head = "Authorization: "
    if form == "detail-cut-at-300":      # Open WebUI's JSON detail was cut to 300, then scrubbed
        pad = "x" * (300 - len(head) - len("Bearer ") - SHOWN)
        return "application/json", json.dumps({"detail": pad + head + auth}).encode()
    if form == "text-cut-at-200":        # a proxy's text page was cut to 200, then scrubbed
        pad = "x" * (200 - len(head) - len("Bearer ") - SHOWN)
        return "text/plain", (pad + head + auth).encode()
    if form == "json-escaped":           # a proxy's page quoting the request as JSON
        return "text/plain", ("upstream refused the request " + json.dumps({"headers": {"auth": auth}})).encode()
    if form == "url-encoded":
        return "text/plain", ("upstream redirect to /login?next=" + quote(auth, safe="")).encode()
    raise AssertionError(form)


def test_escaped_and_encoded_forms_of_a_remembered_value_are_scrubbed() -> None:
    remember(KEY)
    for shown in (json.dumps(KEY), json.dumps(json.dumps(KEY)), quote(KEY, safe=""), quote(KEY).lower(),
                  quote(json.dumps(KEY)[1:-1], safe="")):
        assert scrub(f"x {shown} y").startswith(f"x {REDACTED}") or REDACTED in scrub(shown), shown
        assert not any(part in scrub(shown) for part in CORE), (shown, scrub(shown))


def echo_server(form: str) -> ThreadingHTTPServer:
    class Echo(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path == "/api/config":
                code, ctype, data = 200, "application/json", json.dumps({"version": "0.12.4", "onboarding": False}).encode()
            else:
                code = 500
                ctype, data = body(form, self.headers.get("Authorization", ""))
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Echo)


@pytest.fixture(params=["detail-cut-at-300", "text-cut-at-200", "json-escaped", "url-encoded"])
def echoing(request: pytest.FixtureRequest) -> Iterator[str]:
    server = echo_server(request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_key_cut_or_escaped_by_a_server_is_still_scrubbed(echoing: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OWUI_KEY", KEY)
    file = tmp_path / "desired_state.toml"
    file.write_text(f'version = 1\n[openwebui]\nurl = "{echoing}"\napi_key = "${{OWUI_KEY}}"\n'
                    'default_user_role = "user"\n')
    for as_json in (False, True):
        assert cli.cmd_plan(argparse.Namespace(file=str(file), json=as_json, detailed_exitcode=False)) == 1
        out = capsys.readouterr()
        text = out.out + out.err
        assert "[REDACTED]" in text, text
        for part in CORE:
            assert part not in text, text


async def test_credentials_written_in_a_node_url_show_nowhere(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant())
        host = node.url.removeprefix("http://")
        file = tmp_path / "desired_state.toml"
        text = network([node], "")
        text = text.replace(node.url, f"http://ollama:Hunter2-literal@{host}")
        text += f'[[nodes]]\nname = "gpu-2"\nurl = "http://127.0.0.1:{free_port()}/ollama?token=tok-literal-123&x=1"\n'
        file.write_text(text)
        svc = Service(file, drain_timeout=2)
        assert await svc.start()
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                shown = [(await client.get(svc.status_url + path)).text for path in ("/status", "/")]
            assert await asyncio.to_thread(status_cli.main, svc.status_url, True) in (0, 1)
            shown.append(capsys.readouterr().out)
        finally:
            await svc.stop()
    for text in shown:
        assert "gpu-1" in text and "gpu-2" in text
        assert "Hunter2-literal" not in text and "tok-literal-123" not in text, text


async def test_a_node_s_poll_error_is_cut_between_words_never_inside_a_key() -> None:
    """The balancer keeps a node's poll error short; the cut falls before a key, not inside it,
    so the daemon's scrubber still finds the whole key."""
    import aiohttp
    from aiohttp import web

    from balancer.config import NodeSpec
    from balancer.fleet import Node
    from balancer.pollers import fetch_json

    secret = "tok-" + "0123456789abcdef" * 3
    text = "upstream refused " + "x " * 75 + f"Authorization: Bearer {secret} end"
    assert text.index(secret) < 200 < text.index(secret) + len(secret)

    async def tags(_: web.Request) -> web.Response:
        return web.Response(status=500, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        node = Node(NodeSpec("gpu-1", f"http://127.0.0.1:{port}"), 0)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientResponseError) as caught:
                await fetch_json(session, node, "/api/tags", aiohttp.ClientTimeout(total=5))
    finally:
        await runner.cleanup()
    said = caught.value.message
    assert said.startswith("upstream refused") and len(said) <= 200
    assert "tok-" not in said and "0123" not in said, said
