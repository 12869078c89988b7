"""A faithful Ollama simulator: many simulated nodes in one asyncio process.

    async with Simulator() as sim:                      # Simulator(catalogue=CATALOGUE, registry_online=True)
        node = await sim.add_node(name="gpu-1", models=["codestral:22b"], port=0,
                                  timing=Timing(), version="0.13.5", num_parallel=1)
        node.url, node.name, node.port
        node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=3)   # also delay=, message=, paths=
        node.clear_fault()
        node.requests / node.write_requests() / node.clear_requests()
        node.installed_models(), node.loaded_models(), node.cancelled_generations
        node.install("codestral-30k", from_="codestral:22b", parameters={"num_ctx": 30000})
        await node.wait_for(lambda: ..., timeout=5.0)
        node.registry_online = False
        await sim.remove_node(node)

    with SimulatorThread() as sim:                      # the same, for synchronous code
        node = sim.add_node(name="gpu-1", models=["qwq:32b"])

More `add_node` keywords: max_queue (512), max_loaded (3), vram (24 GiB), reply_tokens (12),
keep_alive (300 s, OLLAMA_KEEP_ALIVE), context_length (None, OLLAMA_CONTEXT_LENGTH).
Node switches: host_guard (403 for non-local Host headers), registry_redirects.
Faults (str enum, see faults.py for the paths each applies to by default): NONE, REFUSE,
NO_ANSWER, HANG_AFTER_HEADERS, FAIL_MID_STREAM, RST_MID_STREAM, FIN_MID_STREAM, SLOW_TOKENS,
HTTP_500, HTTP_503_BUSY, MODEL_NOT_FOUND, FREEZE, DISK_FULL.
Command line: `python -m simulator --nodes 3 --port 11501 --models codestral:22b,qwq:32b`.
"""

from .catalogue import CATALOGUE, Catalogue, CatalogueModel, build_catalogue
from .faults import Fault
from .node import RecordedRequest, SimNode
from .sim import Simulator
from .thread import SimulatorThread
from .timing import Timing

__all__ = ["CATALOGUE", "Catalogue", "CatalogueModel", "Fault", "RecordedRequest", "SimNode",
           "Simulator", "SimulatorThread", "Timing", "build_catalogue"]
