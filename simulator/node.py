"""SimNode: one simulated Ollama server (state, faults, request log, listening socket)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from .catalogue import CATALOGUE, Catalogue, lookup
from .faults import DEFAULT_ERROR, Fault, FaultState, reset_transport
from .gofmt import FOREVER_NS
from .names import parse_name
from .state import (InstalledModel, NodeState, derive_model, effective_num_ctx,
                    model_from_catalogue)
from .timing import Timing

GiB = 1024**3
_WRITE_PATHS = ("/api/pull", "/api/create", "/api/delete", "/api/copy", "/api/push",
                "/api/blobs/")
_DEFAULT_MESSAGES = {Fault.HTTP_500: "llama runner process has terminated: exit status 2",
                     Fault.DISK_FULL: "no space left on device"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any  # parsed JSON, or None
    client_disconnected: bool
    status: int | None
    started: float  # time.monotonic()
    cut_by_fault: bool = False

    def is_load_call(self) -> bool:
        """generate/chat/embed used only to load or unload (nothing to evaluate)."""
        if self.method != "POST" or not isinstance(self.body, dict):
            return False
        if self.path == "/api/generate":
            return not self.body.get("prompt") and not self.body.get("images")
        if self.path == "/api/chat":
            return not self.body.get("messages")
        if self.path == "/api/embed":
            return not self.body.get("input")
        return False


class SimNode:
    """A simulated node. Create it with `Simulator.add_node`."""

    def __init__(self, name: str, *, catalogue: Catalogue = CATALOGUE,
                 timing: Timing | None = None, version: str = "0.13.5", num_parallel: int = 1,
                 max_queue: int = 512, max_loaded: int = 3, vram: int = 24 * GiB,
                 reply_tokens: int = 12, keep_alive: float = 300.0,
                 context_length: int | None = None, registry_online: bool = True,
                 multiuser_cache: bool = False) -> None:
        self.name = name
        self.catalogue = catalogue
        self.timing = timing or Timing()
        self.version = version
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.max_loaded = max_loaded
        self.vram = vram
        self.reply_tokens = reply_tokens
        self.default_keep_alive_ns = (  # OLLAMA_KEEP_ALIVE; negative = forever
            FOREVER_NS if keep_alive < 0 else int(keep_alive * 1e9))
        self.context_length = context_length  # OLLAMA_CONTEXT_LENGTH (None = the default)
        self.multiuser_cache = multiuser_cache  # OLLAMA_MULTIUSER_CACHE: slot choice
        self.registry_online = registry_online
        self.host_guard = True  # 403 for a non-local Host header, like Ollama on loopback
        self.registry_redirects = True  # False: private-registry pulls fail "no Location header"
        self.state = NodeState(catalogue)
        self.fault_state = FaultState()
        self.requests: list[RecordedRequest] = []
        self.max_log = 20000  # request log entries kept (the oldest half goes beyond)
        self.cancelled_generations = 0
        self.loads = 0  # cold runner loads completed (a reload counts)
        self.prompt_tokens = 0  # prompt tokens of all generations
        self.cached_prompt_tokens = 0  # of which came from a slot's cache
        self.last_options: dict[str, Any] = {}  # effective options of the latest generation
        self.port = 0
        self.stopping = False
        self.waiting = 0  # requests queued on a loaded runner's slots (no bound, no bytes)
        self.pending_loads = 0  # requests queued for a (re)load (bounded by max_queue)
        self.load_lock = asyncio.Lock()  # Ollama's scheduler loads one runner at a time
        self._thaw = asyncio.Event()
        self._thaw.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._sock: socket.socket | None = None
        self._closing: list[web.SockSite] = []
        self._want_listen = False
        self._port_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version_at_least(self, *want: int) -> bool:
        try:
            have = tuple(int(p) for p in self.version.split("-")[0].split(".")[:3])
        except ValueError:
            return True
        return have >= want

    def default_num_ctx(self, model: InstalledModel) -> int:
        """num_ctx of a load that sets none: 4096 up to 0.15.4, VRAM-tiered from 0.15.5."""
        if self.context_length:
            return self.context_length
        if not self.version_at_least(0, 15, 5):
            return 4096
        tier = 262144 if self.vram >= 47 * GiB else 32768 if self.vram >= 23 * GiB else 4096
        return min(tier, model.info.context_length)

    def num_ctx_for(self, model: InstalledModel, options: dict[str, Any]) -> int:
        """The context a load for this request gets (clamped to training from 0.15.5)."""
        return effective_num_ctx(model, options, self.default_num_ctx(model),
                                 clamp=self.version_at_least(0, 15, 5))

    async def start(self, app: web.Application, port: int = 0) -> None:
        """Serve `app` (server.build_app(node)) on 127.0.0.1:port (0 = a free port)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._runner = web.AppRunner(app, handler_cancellation=True,
                                     shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        self.port = port
        self._set_listening(True)
        assert self._port_task is not None
        await self._port_task

    # Listening follows a wish (`_want_listen`). The part a client notices (the listening
    # socket closing or opening) happens at once; aiohttp's site bookkeeping follows in one
    # background task, so quick refuse/clear sequences always end in the last wish.
    def _set_listening(self, want: bool) -> None:
        self._want_listen = want
        if self._port_task is None or self._port_task.done():
            self._listen_step()
            self._port_task = self._background(self._converge_port())

    def _listen_step(self) -> None:
        if not self._want_listen:
            if self._site is not None:
                server = getattr(self._site, "_server", None)
                if server is not None:
                    server.close()  # synchronous: the port refuses from the next connect on
                self._closing.append(self._site)
                self._site = None
                for handler in self._connections():
                    reset_transport(handler.transport)
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        elif self._site is None and self._sock is None:
            self._sock = self._bind(self.port)

    async def _converge_port(self) -> None:
        while True:
            while self._closing:
                await self._stop_site(self._closing.pop())
            if self._want_listen and self._site is None:
                if self._sock is None:
                    self._sock = self._bind(self.port)
                site, self._sock = web.SockSite(self._runner, self._sock), None  # type: ignore[arg-type]
                await site.start()
                self._site = site
                continue
            if not self._want_listen and (self._site is not None or self._sock is not None):
                self._listen_step()
                continue
            return

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    def _background(self, coro: Any) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _stop_site(site: web.BaseSite) -> None:
        with contextlib.suppress(RuntimeError):  # already unregistered by a cleanup
            await site.stop()

    def _connections(self) -> list[Any]:
        server = self._runner.server if self._runner else None
        return list(server.connections) if server is not None else []

    async def stop(self) -> None:
        self.stopping = True
        self._thaw.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._sock is not None:
            self._sock.close()
        self._site = self._sock = None

    # -- thread-safety -----------------------------------------------------------------
    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread or not loop.is_running():
            return fn(*args, **kwargs)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    # -- faults ------------------------------------------------------------------------
    def set_fault(self, fault: Fault | str, *, after_chunks: int = 2, delay: float = 0.5,
                  message: str | None = None, paths: tuple[str, ...] | None = None) -> None:
        """Switch the node into a fault mode (replaces the previous one)."""
        fault = Fault(fault)
        msg = message or _DEFAULT_MESSAGES.get(fault, DEFAULT_ERROR)
        self._on_loop(self._apply_fault, FaultState(fault, after_chunks, delay, msg, paths))

    def clear_fault(self) -> None:
        self._on_loop(self._apply_fault, FaultState())

    def _apply_fault(self, new: FaultState) -> None:
        old = self.fault_state.fault
        self.fault_state = new
        if self._runner is not None and not self.stopping:
            self._set_listening(new.fault is not Fault.REFUSE)
        if new.fault is Fault.FREEZE and old is not Fault.FREEZE:
            self._thaw.clear()
            for h in self._connections():
                if h.transport is not None and not h.transport.is_closing():
                    h.transport.pause_reading()
        if old is Fault.FREEZE and new.fault is not Fault.FREEZE:
            self._thaw.set()
            for h in self._connections():
                if h.transport is not None and not h.transport.is_closing():
                    h.transport.resume_reading()

    async def thawed(self) -> None:
        if not self._thaw.is_set():
            await self._thaw.wait()

    # -- observation -------------------------------------------------------------------
    def write_requests(self) -> list[RecordedRequest]:
        """Requests that change state: pull/create/delete/copy/push/blob uploads, and
        generate/chat/embed calls that only load or unload a model."""
        return [r for r in list(self.requests)
                if (r.method in ("POST", "DELETE") and r.path.startswith(_WRITE_PATHS))
                or r.is_load_call()]

    def clear_requests(self) -> None:
        self._on_loop(self.requests.clear)

    def installed_models(self) -> list[str]:
        """Shortest names with tag, newest first (as /api/tags lists them)."""
        return self._on_loop(lambda: [m["name"] for m in self.state.tags()])  # type: ignore[no-any-return]

    def loaded_models(self) -> list[str]:
        """Names as /api/ps shows them (the model that caused each load)."""
        return self._on_loop(lambda: [m["name"] for m in self.state.ps()])  # type: ignore[no-any-return]

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: condition not met within {timeout} s")
            await asyncio.sleep(0.01)

    # -- setup -------------------------------------------------------------------------
    def install(self, name: str, *, parameters: dict[str, Any] | None = None,
                system: str | None = None, template: str | None = None,
                from_: str | None = None) -> None:
        """Pre-install a catalogue model (or a model derived `from_` one) instantly."""
        self._on_loop(self._install, name, parameters, system, template, from_)

    def _install(self, name: str, parameters: dict[str, Any] | None, system: str | None,
                 template: str | None, from_: str | None) -> None:
        n = parse_name(name)
        if n is None:
            raise ValueError(f"invalid model name {name!r}")
        base_name = from_ or name
        base = self.state.get(base_name)
        if base is None:
            bn = parse_name(base_name)
            info = lookup(self.catalogue, base_name)
            if info is None or bn is None:
                raise KeyError(f"{base_name!r} is not in the catalogue")
            base = model_from_catalogue(info, bn)
            if from_ is not None:
                self.state.put(base)
        if from_ is None and parameters is None and system is None and template is None:
            self.state.put(base)
            return
        parent = base.name.short if from_ is not None else ""
        self.state.put(derive_model(base, n, parameters=parameters, template=template,
                                    system=system, parent=parent))

    def __repr__(self) -> str:
        return f"SimNode({self.name!r}, {self.url})"
