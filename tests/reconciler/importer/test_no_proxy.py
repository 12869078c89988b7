"""A proxy set in the environment (a systemd env file, a shell profile) never carries ollafleet's
traffic: the Open WebUI admin key, password and token, and node calls, go straight to the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from reconciler import status_cli
from reconciler.targets.ollama.client import OllamaClient
from reconciler.targets.openwebui.client import OpenWebUIClient

DEAD_PROXY = "http://127.0.0.1:9"      # nothing listens on the discard port


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def config(_: web.Request) -> web.Response:
        return web.json_response({"version": "0.6.0", "name": "Open WebUI"})

    async def tags(_: web.Request) -> web.Response:
        return web.json_response({"models": []})

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"last_pass": {"ok": True}, "errors": []})

    app = web.Application()
    app.add_routes([web.get("/api/config", config), web.get("/api/tags", tags), web.get("/status", status)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)


async def test_openwebui_client_ignores_a_proxy_in_the_environment(server: str, proxied: None) -> None:
    client = OpenWebUIClient(server)
    try:
        assert (await client.public_config())["version"] == "0.6.0"
    finally:
        await client.close()


async def test_ollama_client_ignores_a_proxy_in_the_environment(server: str, proxied: None) -> None:
    client = OllamaClient(server)
    try:
        assert await client.tags() == []
    finally:
        await client.close()


async def test_status_ignores_a_proxy_in_the_environment(server: str, proxied: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(status_cli.main, server, True) == 0, capsys.readouterr().err
