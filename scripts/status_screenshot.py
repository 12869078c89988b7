"""Make docs/status-page.png: the demo network (simulated, on free 127.0.0.1 ports) after an
hour of chat traffic, played in seconds on the daemon's history clock, with sim-3 stopped from
minute 25 to minute 40 and stopped again at the end, photographed by Debian's headless Chromium.

    .venv/bin/python scripts/status_screenshot.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.daemon.run import Service  # noqa: E402
from reconciler.daemon.timeline import Timeline  # noqa: E402
from reconciler.demo import DEMO_FILE  # noqa: E402
from simulator import Simulator, Timing  # noqa: E402
from tests.headless import chromium, chromium_path  # noqa: E402


async def main(out: Path) -> int:
    if chromium_path() is None:
        print("needs Debian's chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    work = Path("/tmp/ollafleet-screenshot")
    work.mkdir(exist_ok=True)
    async with Simulator() as sim:
        text = DEMO_FILE.read_text()
        nodes = {}
        for name in ("sim-1", "sim-2", "sim-3"):
            nodes[name] = await sim.add_node(name, timing=Timing(pull_bps=40e9, gen_tps=150.0, load_delay=0.3))
            text = re.sub(rf'name = "{name}"\nurl = "[^"]+"', f'name = "{name}"\nurl = "{nodes[name].url}"', text)
        text = text.replace("127.0.0.1:11500", "127.0.0.1:0").replace("127.0.0.1:11499", "127.0.0.1:0")
        file = work / "demo.toml"
        file.write_text(text)
        now = [math.floor(time.time() / 60) * 60.0 - 3600]   # the history's clock: an hour ago
        svc = Service(file, drain_timeout=2, timeline=Timeline(lambda: now[0]), sample_every=0.02)
        if not await svc.start():
            return 1
        try:
            while not (svc.daemon.last_pass and svc.daemon.last_pass["ok"] and not svc.daemon.running_pass):
                await asyncio.sleep(0.2)
            assert svc.balancer is not None
            balancer, timeline = svc.balancer, svc.timeline
            rng = random.Random(7)

            async def until(check) -> None:  # type: ignore[no-untyped-def]
                while not check():
                    await asyncio.sleep(0.02)

            async with httpx.AsyncClient(base_url=balancer.url, timeout=60, trust_env=False) as client:
                async def chat(model: str) -> None:
                    await client.post("/api/chat", json={"model": model, "stream": False, "messages": [
                        {"role": "user", "content": "hello " * rng.randint(1, 400)}]})

                for minute in range(60):
                    if minute in (25, 58):
                        nodes["sim-3"].set_fault("refuse")
                        await until(lambda: not all(s.reachable for s in balancer.states()))
                    if minute == 40:
                        nodes["sim-3"].clear_fault()
                        await until(lambda: all(s.reachable and s.reliability == "Reliable"
                                                for s in balancer.states()))
                    busy = 2 + int(4 * math.sin(math.pi * minute / 60) ** 2) + rng.randint(0, 2)
                    await asyncio.gather(*(chat(rng.choice(["codestral:22b", "codestral:22b", "qwq:32b"]))
                                           for _ in range(busy)))
                    sampled = timeline.hour.open.samples if timeline.hour.open else 0
                    await until(lambda: timeline.hour.open is not None and timeline.hour.open.samples > sampled)
                    now[0] += 60
                    await until(lambda: len(timeline.hour.points) == minute + 1)
            async with chromium(work / "profile", height=1000) as page:
                await page.goto(svc.status_url + "/")
                await page.wait_for("document.body.innerText.includes('unreachable')")
                # no scrollbar: the picture is taken at the window's full width
                await page.evaluate("document.documentElement.style.overflow = 'hidden';"
                                    "document.documentElement.scrollWidth")   # laid out again now
                await page.screenshot(out)
        finally:
            await svc.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "status-page.png"
    sys.exit(asyncio.run(main(target)))
