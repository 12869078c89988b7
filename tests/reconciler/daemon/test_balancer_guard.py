"""The daemon's [balancer] connection settings reach the balancer, and /metrics counts what
its guard did (issue 12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.run import Service
from simulator import Simulator, Timing

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


async def test_idle_timeout_and_limit_from_the_file_show_in_metrics(sim: Simulator,
                                                                   tmp_path: Path) -> None:
    node = await sim.add_node("gpu-1", timing=Timing.instant())
    file = tmp_path / "desired_state.toml"
    file.write_text(
        'version = 1\n[balancer]\nlisten = "127.0.0.1:0"\nidle_timeout = "0.5s"\n'
        'max_connections = 2\nmax_body_mb = 2\n'
        '[reconcile]\ninterval = "60s"\nstatus_listen = "127.0.0.1:0"\n'
        f'[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n')
    svc = Service(file, drain_timeout=1)
    assert await svc.start()
    try:
        assert svc.balancer is not None
        assert svc.balancer.settings.max_body == 2 * 1024 * 1024
        port = svc.balancer.port
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, writer in opened:
            writer.write(b"GET /api/tags HTTP/1.1\r\nHo")  # half a header, then nothing
        for reader, writer in opened:  # one made room for the third, then the idle timeout
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
            writer.close()
        async with httpx.AsyncClient() as client:
            text = (await client.get(svc.status_url + "/metrics")).text
        assert "ollafleet_balancer_connections_refused_total 1.0" in text
        assert "ollafleet_balancer_connections_timed_out_total 2.0" in text
    finally:
        await svc.stop()
