"""The inference core shared by every endpoint: queue/slots, runner loads, timed tokens."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

from .faults import BUSY_ERROR, STREAM_FAULTS, CutConnection, Fault
from .state import InstalledModel, Runner, effective_num_ctx, runner_options
from .timing import NS, common_prefix, tokenize
from .wire import HTTPError

if TYPE_CHECKING:
    from .node import SimNode

GRAPH_OVERHEAD = 300 * 1024**2
_WORDS = ("the", "answer", "depends", "on", "context", "but", "in", "short", "it", "works",
          "as", "expected", "with", "care", "and", "patience")
_THOUGHT = ("Okay", ",", " let", " me", " think", " about", " this", " carefully", ".")


@dataclass
class GenRequest:
    model: InstalledModel
    prompt: list[int]  # token ids of the rendered prompt
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive_ns: int | None = None
    think: bool = False
    json_format: bool = False
    path: str = "/api/chat"
    streaming: bool = True
    tool_call: dict[str, Any] | None = None  # {"name", "arguments"}: answer with this call


@dataclass
class GenResult:
    done_reason: str = "stop"
    load_ns: int = 0
    prompt_eval_count: int = 0
    prompt_eval_ns: int = 0
    eval_count: int = 0
    eval_ns: int = 0
    total_ns: int = 0
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    context: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, int]:
        """The six duration/count fields, omitted when zero (Go omitempty)."""
        items = (("total_duration", self.total_ns), ("load_duration", self.load_ns),
                 ("prompt_eval_count", self.prompt_eval_count),
                 ("prompt_eval_duration", self.prompt_eval_ns),
                 ("eval_count", self.eval_count), ("eval_duration", self.eval_ns))
        return {k: v for k, v in items if v}


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


async def ensure_loaded(node: SimNode, model: InstalledModel, options: dict[str, Any],
                        keep_alive_ns: int | None) -> tuple[Runner, int]:
    """Load (or reuse) the runner for the model's weights; returns it and load_duration ns."""
    state = node.state
    opts = runner_options(model, options)
    runner: Runner | None = None
    while True:
        state.expire()
        runner = state.runners.get(model.weights)
        if runner is None or runner.options != opts:
            break
        if not runner.loaded.is_set():  # another request is loading it: wait for that load
            await runner.loaded.wait()
            if state.runners.get(model.weights) is not runner:
                continue  # that load was abandoned
        if keep_alive_ns is not None:
            runner.keep_alive_ns = keep_alive_ns
        return runner, int(node.timing.warm_load * NS)
    keep = keep_alive_ns
    if runner is not None:  # different runner options: reload
        keep = runner.keep_alive_ns if keep is None else keep
        del state.runners[model.weights]
    num_ctx = effective_num_ctx(model, options, node.default_num_ctx(model))
    size = (model.weights_size + GRAPH_OVERHEAD
            + model.info.kv_bytes_per_token * num_ctx * node.num_parallel)
    _make_room(node, size)
    used = sum(r.size_vram for r in state.runners.values())
    runner = Runner(weights=model.weights, model=model, options=opts, num_ctx=num_ctx,
                    keep_alive_ns=node.default_keep_alive_ns if keep is None else keep,
                    size=size, size_vram=max(0, min(size, node.vram - used)))
    state.runners[model.weights] = runner
    seconds = node.timing.load_seconds(model.weights_size)
    try:
        await node.timing.sleep(seconds)
    except BaseException:
        if state.runners.get(model.weights) is runner:
            del state.runners[model.weights]
        runner.loaded.set()
        raise
    runner.loaded.set()
    return runner, int(seconds * NS)


def _make_room(node: SimNode, size: int) -> None:
    """Evict idle runners, least recently used first, until count and VRAM allow a load."""
    runners = node.state.runners
    while True:
        used = sum(r.size_vram for r in runners.values())
        if len(runners) < node.max_loaded and used + size <= node.vram:
            return
        idle = [r for r in runners.values() if r.busy == 0 and r.loaded.is_set()]
        if not idle:
            return
        victim = min(idle, key=lambda r: r.last_used)
        del runners[victim.weights]


@contextlib.asynccontextmanager
async def slot(node: SimNode) -> AsyncIterator[None]:
    """One of OLLAMA_NUM_PARALLEL slots, waiting in a bounded queue (503 when full)."""
    assert node.slots is not None
    if node.slots.locked() and node.waiting >= node.max_queue:
        raise HTTPError(503, BUSY_ERROR)
    node.waiting += 1
    try:
        await node.slots.acquire()
    finally:
        node.waiting -= 1
    try:
        yield
    finally:
        node.slots.release()


def _reply(node: SimNode, req: GenRequest) -> list[str]:
    words = ["Simulated", " answer", " from", f" {node.name}", ":"]
    words += [" " + w for w in itertools.islice(itertools.cycle(_WORDS), max(0, node.reply_tokens))]
    words = words[:max(0, node.reply_tokens - 1)] + ["."]
    if req.json_format:
        words = ['{"', "answer", '":', ' "'] + [w.strip() + " " for w in words[:-1]] + ['"}']
    return words


class Generation:
    """One inference after it got a slot: load, prompt evaluation, token stream."""

    def __init__(self, node: SimNode, req: GenRequest) -> None:
        self.node = node
        self.req = req
        self.result = GenResult()
        self.runner: Runner | None = None
        self.started = time.monotonic()

    async def start(self) -> None:
        node, req = self.node, self.req
        opts = merged_options(req.model, req.options)
        check_options(opts)
        node.last_options = opts  # what the run used: model params < request options
        self.runner, self.result.load_ns = await ensure_loaded(node, req.model, req.options,
                                                               req.keep_alive_ns)
        self.runner.busy += 1
        self.runner.last_used = time.monotonic()
        prompt = req.prompt[-self.runner.num_ctx:]
        cached = common_prefix(self.runner.cache, prompt)
        evaluated = max(1, len(prompt) - cached)
        seconds = node.timing.prompt_seconds(evaluated)
        self.runner.cache = list(prompt)  # the slot's KV cache now holds this prompt
        await node.timing.sleep(seconds)
        self.result.prompt_eval_count = evaluated
        self.result.prompt_eval_ns = max(1, int(seconds * NS))
        self.result.context = list(prompt)

    async def pieces(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ("thinking"|"content", text) tokens at the node's generation speed."""
        node, req, res = self.node, self.req, self.result
        opts = merged_options(req.model, req.options)
        limit = int(opts.get("num_predict") or -1)
        stops = [s for s in opts.get("stop") or [] if isinstance(s, str) and s]
        plan = [("thinking", t) for t in _THOUGHT] if req.think else []
        if req.tool_call is not None:
            plan += [("tool", req.tool_call["name"])]
        else:
            plan += [("content", t) for t in _reply(node, req)]
        extra = 0.0
        for kind, piece in plan:
            if 0 <= limit <= res.eval_count:
                res.done_reason = "length"
                break
            await node.thawed()
            f = node.fault_state
            delay = node.timing.token_seconds()
            slow = f.delay if f.applies(Fault.SLOW_TOKENS, req.path) else 0.0
            extra += slow
            await asyncio.sleep(delay * node.timing.time_scale + slow)
            if not req.streaming and res.eval_count >= f.after_chunks and \
                    f.fault in STREAM_FAULTS and f.applies(f.fault, req.path):
                if f.fault is Fault.FAIL_MID_STREAM:
                    raise HTTPError(500, f.message)
                raise CutConnection(f.fault)
            res.eval_count += 1
            res.eval_ns = round((res.eval_count * delay + extra) * NS)
            if kind == "tool":
                assert req.tool_call is not None
                res.tool_calls.append(req.tool_call)
                yield kind, piece
                continue
            if kind == "content":
                hit = next((s for s in stops if s in res.content + piece), None)
                if hit is not None:
                    cut = (res.content + piece).index(hit)
                    piece = (res.content + piece)[:cut][len(res.content):]
                    if piece:
                        res.content += piece
                        yield kind, piece
                    break
                res.content += piece
            else:
                res.thinking += piece
            res.context.extend(tokenize(piece)[:1])
            yield kind, piece
        res.total_ns = int((time.monotonic() - self.started) * NS)
        res.total_ns = max(res.total_ns, res.load_ns + res.prompt_eval_ns + res.eval_ns)
        if self.runner is not None:
            self.runner.cache = self.runner.cache + tokenize(res.content)

    def release(self) -> None:
        if self.runner is not None:
            self.runner.busy -= 1
            if self.runner.busy == 0:
                self.runner.went_idle()
            self.runner = None


@contextlib.asynccontextmanager
async def generation(node: SimNode, req: GenRequest) -> AsyncIterator[Generation]:
    """Queue for a slot, load, evaluate the prompt; count a cancellation if the client leaves."""
    gen = Generation(node, req)
    try:
        async with slot(node):
            await gen.start()
            yield gen
    except (asyncio.CancelledError, ConnectionResetError):
        if not node.stopping:
            node.cancelled_generations += 1
        raise
    finally:
        gen.release()
