"""Debian's headless Chromium, driven over its DevTools protocol (a websocket on 127.0.0.1), for
tests that load a page, read its DOM, take a screenshot and watch it change."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})   # type: ignore[no-any-return]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href.startsWith(%s)" % json.dumps(url))

    async def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        async def loop() -> None:
            while not await self.evaluate(expression):
                await asyncio.sleep(0.1)
        await asyncio.wait_for(loop(), timeout)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium(profile: Path, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh profile and yield its first tab."""
    exe = chromium_path()
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        f"--window-size={width},{height}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async def listening() -> bytes:
            assert proc.stderr is not None
            while True:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError("chromium exited before it listened")
                if match := _LISTENING.search(line):
                    return match.group(1)
        browser_ws = (await asyncio.wait_for(listening(), 60)).decode()
        drain = asyncio.create_task(proc.stderr.read())   # a full stderr pipe would stall chromium
        port = browser_ws.split("/")[2].rsplit(":", 1)[1]
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                tabs = await resp.json()
            tab = next(t for t in tabs if t.get("type") == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=64 * 2**20) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                yield page
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
