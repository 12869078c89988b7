"""The status page after an hour of traffic (played in seconds on the daemon's injectable
clock) with one node stopped in the middle: charts drawn as SVG with their data points, the
stopped interval visible, percentiles instead of bucket lists, readable without JavaScript
and refreshed in place with it."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from reconciler.daemon.timeline import Timeline
from simulator import SimNode, Simulator, Timing
from tests.headless import chromium, chromium_path
from tests.reconciler.daemon.test_service import network

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed "
                                "(scripts/test installs it: apt-get install -y chromium)")

MODEL = "llama3.2:1b"
STOP, START_AGAIN = 20, 40     # gpu-2 is stopped in minute 20 and started again in minute 40
DOWN = range(STOP, START_AGAIN + 1)   # the minutes in which a sample found it down


class Clock:
    """The timeline's clock: the test moves it a minute at a time."""

    def __init__(self) -> None:
        self.now = math.floor(time.time() / 3600) * 3600.0 - 3600   # a whole hour, ending about now

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    async def loop() -> None:
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def hour(tmp_path: Path) -> AsyncIterator[tuple[Service, Clock, SimNode]]:
    """A daemon after an hour of chats, gpu-2 stopped from minute 20 to minute 40."""
    async with Simulator() as sim:
        timing = Timing(gen_tps=200.0, load_delay=0.02)
        a = await sim.add_node("gpu-1", models=[MODEL], timing=timing)
        b = await sim.add_node("gpu-2", models=[MODEL], timing=timing)
        file = tmp_path / "desired_state.toml"
        file.write_text(network([a, b], f'[models."{MODEL}"]\n'))
        clock = Clock()
        svc = Service(file, drain_timeout=2, timeline=Timeline(clock), sample_every=0.01)
        assert await svc.start()
        try:
            assert svc.balancer is not None
            balancer = svc.balancer
            await until(lambda: all(s.reachable for s in balancer.states()))

            def gpu2() -> tuple[bool | None, str]:
                s = next(s for s in balancer.states() if s.name == "gpu-2")
                return s.reachable, s.reliability

            async with httpx.AsyncClient(base_url=balancer.url, timeout=30, trust_env=False) as client:
                async def chat() -> int:
                    return (await client.post("/api/chat", json={
                        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": "hi"}]})).status_code

                for minute in range(60):
                    if minute == STOP:
                        b.set_fault("refuse")
                        await until(lambda: gpu2()[0] is False)
                    if minute == START_AGAIN:
                        b.clear_fault()
                        await until(lambda: gpu2() == (True, "Reliable"))
                    assert await asyncio.gather(*(chat() for _ in range(3))) == [200] * 3
                    timeline = svc.timeline
                    sampled = timeline.hour.open.samples if timeline.hour.open else 0
                    await until(lambda: timeline.hour.open is not None and timeline.hour.open.samples > sampled)
                    clock.now += 60
                    await until(lambda: len(timeline.hour.points) == minute + 1)
            yield svc, clock, b
        finally:
            await svc.stop()


async def test_the_page_draws_the_hour_with_the_stopped_node(hour: tuple[Service, Clock, SimNode],
                                                             tmp_path: Path) -> None:
    svc, clock, _ = hour
    t0 = clock.now - 3600
    async with httpx.AsyncClient(trust_env=False) as client:
        data = (await client.get(svc.status_url + "/status")).json()
    # the same history for scripts
    points = data["over_time"]["hour"]["points"]
    assert len(points) == 60
    assert [p["t"] for p in points if "gpu-2" in p["down"]] == [t0 + 60 * m for m in DOWN]
    assert all(p["ttft"][MODEL]["n"] == 3 and p["ttft"][MODEL]["p50"] <= p["ttft"][MODEL]["p90"] for p in points)

    async with chromium(tmp_path / "profile") as page:
        await page.goto(svc.status_url + "/")
        card = f'document.querySelector(\'.model[data-model="{MODEL}"]\')'
        await page.wait_for(card + " !== null")
        # time to first token, last hour: a dot per minute, two lines (p50, p90)
        first_chart = card + ".querySelector('svg.chart')"
        assert await page.evaluate(first_chart + ".querySelectorAll('circle.p50').length") >= 59
        assert await page.evaluate(first_chart + ".querySelectorAll('circle.p90').length") >= 59
        assert await page.evaluate(first_chart + ".querySelectorAll('polyline').length") >= 2
        # the stopped interval: shaded on the chart, red on gpu-2's strip, nowhere on gpu-1's
        band = await page.evaluate(first_chart + ".querySelector('rect.down title').textContent")
        assert band.startswith("gpu-2 down"), band
        runs = await page.evaluate("Array.from(document.querySelectorAll('svg.strips')[0].querySelectorAll('rect'))"
                                   ".map(r => [r.dataset.node, r.getAttribute('class'), +r.dataset.t, +r.dataset.end])")
        minute = lambda m: t0 + 60 * m  # noqa: E731
        assert [r for r in runs if r[0] == "gpu-1"] == [["gpu-1", "up", minute(0), minute(61)]]
        assert [r for r in runs if r[0] == "gpu-2"] == [
            ["gpu-2", "up", minute(0), minute(DOWN[0])], ["gpu-2", "down", minute(DOWN[0]), minute(DOWN[-1] + 1)],
            ["gpu-2", "up", minute(DOWN[-1] + 1), minute(61)]]   # the hour, and the minute under way
        # percentiles, not bucket lists
        summary = await page.evaluate(card + ".querySelector('.summary').innerText")
        assert re.fullmatch(r"last hour: p50 \d+\.\d\d s, p90 \d+\.\d\d s, 180 request\(s\)", summary), summary
        text = await page.evaluate("document.body.innerText")
        assert "p50" in text and "p90" in text
        assert "+Inf" not in text and "buckets" not in text and "Inf" not in await page.evaluate(
            "document.documentElement.outerHTML")
        assert "healthy" in await page.evaluate("document.querySelector('h1').innerText")
        # scripting on: <noscript> stays text, so its reload does not apply (see the next test)
        assert await page.evaluate("document.querySelector('noscript meta') === null")

        # with JavaScript the charts change in place: a new minute shows without a reload
        await page.evaluate("window.notReloaded = true")
        # what the reader unfolded stays unfolded across the updates
        await page.evaluate("document.querySelector('.node[data-node=\"gpu-1\"] details').open = true")
        latest = ("Math.max(...Array.from(document.querySelectorAll('svg.strips')[0]"
                  ".querySelectorAll('rect[data-node=\"gpu-1\"]')).map(r => +r.dataset.end))")
        before = await page.evaluate(latest)
        clock.now += 60
        await page.wait_for(f"{latest} === {before + 60}")
        assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of updating"
        assert await page.evaluate("document.querySelector('.node[data-node=\"gpu-1\"] details').open")
        assert not await page.evaluate("document.querySelector('.node[data-node=\"gpu-2\"] details').open")


async def test_the_charts_need_no_javascript(hour: tuple[Service, Clock, SimNode], tmp_path: Path) -> None:
    svc, _, _ = hour
    async with httpx.AsyncClient(trust_env=False) as client:
        html = (await client.get(svc.status_url + "/")).text
    assert not re.search(r'(src|href)="(https?:)?//', html), "every asset must come from ollafleet"
    async with chromium(tmp_path / "profile") as page:
        await page.call("Emulation.setScriptExecutionDisabled", value=True)
        await page.goto(svc.status_url + "/")
        # scripting is off: <noscript> is parsed as markup (its reload applies), not kept as text
        assert await page.evaluate("document.querySelector('noscript meta[http-equiv=refresh]') !== null")
        # the hour's charts: a dot per minute for p50, p90 and the queue
        assert await page.evaluate("document.querySelectorAll('svg.chart circle').length") >= 3 * 60
        assert await page.evaluate("document.querySelectorAll('svg.strips rect.down').length") == 2   # hour, day
        # the charts have a size of their own: drawn, not collapsed
        width = await page.evaluate("document.querySelector('svg.chart').getBoundingClientRect().width")
        assert width > 150, width
        # on a phone: nothing wider than the screen (wide tables scroll in their own box)
        await page.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1,
                        mobile=True)
        await page.goto(svc.status_url + "/")
        assert await page.evaluate("window.innerWidth") == 390
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        widths = await page.evaluate("Array.from(document.querySelectorAll('svg.chart'))"
                                     ".map(s => s.getBoundingClientRect().width)")
        assert widths and all(300 <= w <= 390 for w in widths), widths
