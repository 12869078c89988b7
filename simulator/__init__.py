"""A faithful Ollama simulator: many simulated nodes in one asyncio process.

    async with Simulator() as sim:
        node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
        ... talk HTTP to node.url ...
"""

from .catalogue import CATALOGUE, Catalogue, CatalogueModel, build_catalogue
from .faults import Fault
from .node import RecordedRequest, SimNode
from .sim import Simulator
from .thread import SimulatorThread
from .timing import Timing

__all__ = ["CATALOGUE", "Catalogue", "CatalogueModel", "Fault", "RecordedRequest", "SimNode",
           "Simulator", "SimulatorThread", "Timing", "build_catalogue"]
