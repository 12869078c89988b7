"""Ollama's scheduler (reference/ollama-api.md §7, "The scheduler, as Ollama's source has it").

- A request for a loaded runner with the same resolved load-time options attaches to it at
  once (no queue bound) and later waits on the runner's own `num_parallel` slots.
- Any other request needs a (re)load: it enters the node's bounded queue (`max_queue`, 503
  "server busy" beyond), and loads happen one at a time. A load that does not fit evicts a
  victim (idle first, then shortest keep-alive, pinned last), destroying its keep-alive and
  waiting for its requests, including ones that attach meanwhile.
- A reload on different options drops the old runner's keep-alive; the new runner gets the
  request's keep_alive or the node's default.
- `load_duration` covers everything spent getting the runner: queueing, evictions, loading.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from .faults import BUSY_ERROR
from .state import InstalledModel, Runner, Slot, runner_options
from .timing import NS, common_prefix
from .wire import HTTPError

if TYPE_CHECKING:
    from .node import SimNode

GRAPH_OVERHEAD = 300 * 1024**2


def merged_options(model: InstalledModel, options: dict[str, Any] | None) -> dict[str, Any]:
    return {**model.params, **(options or {})}


def check_options(options: dict[str, Any]) -> None:
    """Wrong JSON types fail at run time like Ollama's options decoding."""
    ints = ("num_ctx", "num_predict", "num_batch", "num_gpu", "top_k", "seed", "num_keep",
            "repeat_last_n", "num_thread", "main_gpu")
    floats = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
              "presence_penalty", "frequency_penalty")
    for key in ints:
        if key in options and (isinstance(options[key], (bool, str, list, dict))):
            raise HTTPError(500, f'option "{key}" must be of type integer')
    for key in floats:
        if key in options and (isinstance(options[key], (bool, str, list, dict))):
            raise HTTPError(500, f'option "{key}" must be of type float32')
    if "stop" in options and not isinstance(options["stop"], list):
        raise HTTPError(500, 'option "stop" must be of type array')


def _usable(node: SimNode, model: InstalledModel, opts: tuple[Any, ...]) -> Runner | None:
    node.state.expire()
    runner = node.state.runners.get(model.weights)
    if runner is not None and runner.options == opts and runner.loaded.is_set():
        return runner
    return None


def _attach(runner: Runner, keep_alive_ns: int | None) -> Runner:
    runner.busy += 1
    runner.idle.clear()
    runner.expires_ns = None
    runner.last_used = time.monotonic()
    if keep_alive_ns is not None:
        runner.keep_alive_ns = keep_alive_ns
    return runner


def release(node: SimNode, runner: Runner) -> None:
    """Drop one reference; an idle runner starts its keep-alive (0: it unloads now)."""
    runner.busy -= 1
    if runner.busy > 0:
        return
    runner.went_idle()
    runner.idle.set()
    if runner.keep_alive_ns == 0 and node.state.runners.get(runner.weights) is runner:
        del node.state.runners[runner.weights]


def modelled_ns(node: SimNode, real_seconds: float) -> int:
    """Real time spent, in the node's modelled time (0 when nothing sleeps)."""
    scale = node.timing.time_scale
    return int(real_seconds / scale * NS) if scale > 0 else 0


async def get_runner(node: SimNode, model: InstalledModel, options: dict[str, Any],
                     keep_alive_ns: int | None) -> tuple[Runner, int]:
    """A referenced runner for the request and the load_duration (ns) to report.
    The caller must `release` it."""
    check_options(merged_options(model, options))  # every path that schedules: 500
    num_ctx = node.num_ctx_for(model, options)
    opts = runner_options(model, options, num_ctx)
    runner = _usable(node, model, opts)
    if runner is not None:
        return _attach(runner, keep_alive_ns), int(node.timing.warm_load * NS)
    if node.pending_loads >= node.max_queue:
        raise HTTPError(503, BUSY_ERROR)
    started = time.monotonic()
    node.pending_loads += 1
    queued = True
    try:
        async with node.load_lock:
            node.pending_loads -= 1
            queued = False
            runner = _usable(node, model, opts)  # loaded by a request ahead of this one
            if runner is not None:
                waited = modelled_ns(node, time.monotonic() - started)
                return _attach(runner, keep_alive_ns), waited + int(node.timing.warm_load * NS)
            runner, seconds = await _load(node, model, opts, num_ctx, keep_alive_ns)
    finally:
        if queued:
            node.pending_loads -= 1
    waited = modelled_ns(node, time.monotonic() - started - seconds * node.timing.time_scale)
    return runner, max(0, waited) + int(seconds * NS)


async def _load(node: SimNode, model: InstalledModel, opts: tuple[Any, ...], num_ctx: int,
                keep_alive_ns: int | None) -> tuple[Runner, float]:
    """Evict what is in the way, then load; returns the attached runner and load seconds."""
    state = node.state
    old = state.runners.get(model.weights)
    if old is not None:  # different runner options: the old one unloads, its pin is lost
        await _evict(node, old)
    size = (model.weights_size + GRAPH_OVERHEAD
            + model.info.kv_bytes_per_token * num_ctx * node.num_parallel)
    while True:
        state.expire()
        others = list(state.runners.values())
        used = sum(r.size_vram for r in others)
        if not others or (len(others) < node.max_loaded and used + size <= node.vram):
            break
        victim = min(others, key=lambda r: (r.busy > 0, r.keep_alive_ns, r.last_used))
        await _evict(node, victim)
    used = sum(r.size_vram for r in state.runners.values())
    keep = node.default_keep_alive_ns if keep_alive_ns is None else keep_alive_ns
    runner = Runner(weights=model.weights, model=model, options=opts, num_ctx=num_ctx,
                    keep_alive_ns=keep, size=size, size_vram=max(0, min(size, node.vram - used)),
                    num_parallel=node.num_parallel)
    _attach(runner, None)
    state.runners[model.weights] = runner
    seconds = node.timing.load_seconds(model.weights_size)
    try:
        await node.timing.sleep(seconds)
    except BaseException:  # the loading client left: Ollama expires a failed load
        if state.runners.get(model.weights) is runner:
            del state.runners[model.weights]
        raise
    finally:
        runner.loaded.set()
    node.loads += 1
    return runner, seconds


async def _evict(node: SimNode, victim: Runner) -> None:
    """Set the victim's keep-alive to 0 and wait until its last request is done."""
    victim.keep_alive_ns = 0
    while victim.busy > 0:
        await victim.idle.wait()
    if node.state.runners.get(victim.weights) is victim:
        del node.state.runners[victim.weights]


@contextlib.asynccontextmanager
async def slot(node: SimNode, runner: Runner, prompt: list[int]) -> AsyncIterator[Slot]:
    """Wait (without bound) for one of the runner's slots, then pick one as Ollama's runner
    does: by default the free slot sharing the longest prefix with the prompt (a new
    conversation overwrites it); with OLLAMA_MULTIUSER_CACHE a slot the prompt continues,
    else the least recently used free one with the longest shared prefix copied in."""
    node.waiting += 1
    try:
        await runner.sem.acquire()
    finally:
        node.waiting -= 1
    free = [s for s in runner.slots if not s.busy]
    chosen = max(free, key=lambda s: common_prefix(s.cache, prompt))
    if node.multiuser_cache:
        best = max(runner.slots, key=lambda s: common_prefix(s.cache, prompt))
        shared = common_prefix(best.cache, prompt)
        if shared == len(best.cache) and not best.busy:
            chosen = best
        else:
            chosen = min(free, key=lambda s: s.last_used)
            chosen.cache = best.cache[:shared]
    chosen.busy = True
    try:
        yield chosen
    finally:
        chosen.busy = False
        chosen.last_used = time.monotonic()
        runner.sem.release()
