"""The HTML status page, loaded in Debian's headless Chromium: it shows each node and model,
refreshes by itself without reloading, works without JavaScript and needs nothing from outside."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, Timing
from tests.headless import chromium, chromium_path
from tests.reconciler.daemon.test_service import network, wait_until

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed "
                                "(scripts/test installs it: apt-get install -y chromium)")

MODELS = '[models."llama3.2:1b"]\n[models."all-minilm:22m"]\nnodes = ["gpu-2"]\n'


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def test_page_shows_nodes_and_models_and_changes_without_reload(sim: Simulator, tmp_path: Path) -> None:
    a = await sim.add_node("gpu-1", timing=Timing.instant())
    b = await sim.add_node("gpu-2", timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([a, b], MODELS))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        async def converged() -> bool:
            return (b.installed_models() == ["all-minilm:22m", "llama3.2:1b"] and svc.daemon.last_pass is not None
                    and not svc.daemon.running_pass)
        await wait_until(converged)

        # without JavaScript: the server-rendered page already has everything, and reloads itself
        async with httpx.AsyncClient(trust_env=False) as client:
            html = (await client.get(svc.status_url + "/")).text
        assert '<noscript><meta http-equiv="refresh"' in html
        assert all(name in html for name in ("gpu-1", "gpu-2", "llama3.2:1b", "all-minilm:22m"))
        assert not re.search(r'(src|href)="(https?:)?//', html), "every asset must come from ollafleet"

        async with chromium(tmp_path / "profile") as page:
            await page.goto(svc.status_url + "/")
            rows = "document.querySelector('.node[data-node=\"%s\"]').innerText"
            await page.wait_for("document.querySelectorAll('.node[data-node]').length === 2")
            row1, row2 = await page.evaluate(rows % "gpu-1"), await page.evaluate(rows % "gpu-2")
            assert "llama3.2:1b" in row1 and "all-minilm:22m" not in row1
            assert "llama3.2:1b" in row2 and "all-minilm:22m" in row2 and "Reliable" in row2
            assert "healthy" in await page.evaluate("document.querySelector('h1').innerText")
            await page.screenshot(tmp_path / "status-page.png")
            assert (tmp_path / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            await page.evaluate("window.notReloaded = true")
            b.set_fault("refuse")
            await page.wait_for("document.querySelector('.node[data-node=\"gpu-2\"]').innerText"
                                ".includes('unreachable')")
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of updating"
            assert "unreachable" not in await page.evaluate(rows % "gpu-1")
    finally:
        await svc.stop()


async def test_page_shows_a_rejected_save_and_no_secret(sim: Simulator, tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(network([node], '[models."llama3.2:1b"]\n').replace(
        f'url = "{node.url}"', f'url = "http://admin:hunter2@{node.url.split("//")[1]}"'))
    svc = Service(file, drain_timeout=2)
    assert await svc.start()
    try:
        await wait_until(lambda: _done(svc))
        file.write_text(file.read_text() + "[nodes.oops]\n")
        svc.daemon.request("file change")

        async def rejected() -> bool:
            return bool(svc.daemon.file_errors)
        await wait_until(rejected)
        async with httpx.AsyncClient(trust_env=False) as client:
            html = (await client.get(svc.status_url + "/")).text
        assert "rejected save" in html and "hunter2" not in html
        assert svc.daemon.revision is not None and svc.daemon.revision.sha256[:12] in html
    finally:
        await svc.stop()


async def _done(svc: Service) -> bool:
    return svc.daemon.last_pass is not None and not svc.daemon.running_pass
