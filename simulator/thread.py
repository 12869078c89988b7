"""SimulatorThread: the same simulator, its loop running in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

from .catalogue import CATALOGUE, Catalogue
from .node import SimNode
from .sim import Simulator

T = TypeVar("T")


async def _evaluate(cond: Callable[[], Any]) -> Any:
    return cond()


class SimulatorThread:
    """Blocking facade for synchronous code: `with SimulatorThread() as sim: ...`."""

    def __init__(self, catalogue: Catalogue = CATALOGUE, registry_online: bool = True) -> None:
        self.sim = Simulator(catalogue=catalogue, registry_online=registry_online)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorThread:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()
            self.loop.close()

        self._thread = threading.Thread(target=run, name="ollama-simulator", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = 60,
             **kwargs: Any) -> T:
        """Run `await fn(*args, **kwargs)` on the simulator's loop and return its result."""
        assert self.loop is not None, "SimulatorThread not started"

        async def wrapper() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    @property
    def nodes(self) -> dict[str, SimNode]:
        return self.sim.nodes

    def add_node(self, name: str | None = None, models: list[str] | tuple[str, ...] = (),
                 **kwargs: Any) -> SimNode:
        """Start a node and block until it listens."""
        return self.call(self.sim.add_node, name, models, **kwargs)

    def add_nodes(self, count: int, **kwargs: Any) -> list[SimNode]:
        return self.call(self.sim.add_nodes, count, **kwargs)

    def remove_node(self, node: SimNode | str) -> None:
        self.call(self.sim.remove_node, node)

    def wait_for(self, cond: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Block until cond() (run on the simulator's loop) is truthy; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.call(_evaluate, cond)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.loop is None:
            return
        self.call(self.sim.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.loop = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
