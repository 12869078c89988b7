"""`ollafleet verify --chat` against simulated nodes and the daemon's balancer (no Open WebUI):
a derived model runs on its base's runner, as Ollama does, and that is no problem."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import load
from reconciler.daemon.run import Service
from reconciler.verify import verify
from simulator import Simulator, Timing
from tests.reconciler.daemon.test_service import network, wait_until

MODELS = """[models."codestral:22b"]
keep_loaded = true
[models."codestral:22b".openwebui]
params = { num_ctx = 30000 }
[models."codestral-30k"]
from = "codestral:22b"
parameters = { num_ctx = 30000, temperature = 0.2 }
"""


async def test_a_derived_model_served_by_its_base_runner_passes_verify(tmp_path: Path) -> None:
    async with Simulator() as sim:
        node = await sim.add_node("gpu-1", timing=Timing.instant(), max_loaded=1)
        file = tmp_path / "desired_state.toml"
        file.write_text(network([node], MODELS))
        svc = Service(file, drain_timeout=1)
        assert await svc.start()
        assert svc.balancer is not None
        try:
            async def converged() -> bool:
                return bool(svc.daemon.last_pass and svc.daemon.last_pass["ok"])
            await wait_until(converged, 30)
            v = await verify(load(file), chat=True, balancer_url=svc.balancer.url, timeout=30)
            # one runner for both names (same weights, same num_ctx), listed under the first one loaded
            assert [m.split(":")[0] for m in node.loaded_models()] == ["codestral"]
            assert v.problems == []
        finally:
            await svc.stop()
