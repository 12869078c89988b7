"""Make docs/status-page.png: the demo network (simulated, on free 127.0.0.1 ports) with some
chat traffic and one node down, photographed by Debian's headless Chromium.

    .venv/bin/python scripts/status_screenshot.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.daemon.run import Service  # noqa: E402
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
            nodes[name] = await sim.add_node(name, timing=Timing(pull_bps=40e9, gen_tps=400.0, load_delay=0.05))
            text = re.sub(rf'name = "{name}"\nurl = "[^"]+"', f'name = "{name}"\nurl = "{nodes[name].url}"', text)
        text = text.replace("127.0.0.1:11500", "127.0.0.1:0").replace("127.0.0.1:11499", "127.0.0.1:0")
        file = work / "demo.toml"
        file.write_text(text)
        svc = Service(file, drain_timeout=2)
        if not await svc.start():
            return 1
        try:
            while not (svc.daemon.last_pass and svc.daemon.last_pass["ok"] and not svc.daemon.running_pass):
                await asyncio.sleep(0.2)
            assert svc.balancer is not None
            async with httpx.AsyncClient(base_url=svc.balancer.url, timeout=60, trust_env=False) as client:
                chats = [client.post("/api/chat", json={"model": model, "stream": False, "messages": [
                    {"role": "user", "content": "hello"}]}) for model in ["codestral:22b", "qwq:32b"] * 3]
                await asyncio.gather(*chats)
            nodes["sim-3"].set_fault("refuse")
            while all(s.reachable for s in svc.balancer.states()):
                await asyncio.sleep(0.2)
            async with chromium(work / "profile", height=1000) as page:
                await page.goto(svc.status_url + "/")
                await page.wait_for("document.body.innerText.includes('unreachable')")
                await page.screenshot(out)
        finally:
            await svc.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "status-page.png"
    sys.exit(asyncio.run(main(target)))
