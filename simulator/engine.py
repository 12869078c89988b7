"""The inference core shared by every endpoint: queue/slots, runner loads, timed tokens."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

from .common import ANSWER_JOIN
from .faults import STREAM_FAULTS, CutConnection, Fault
from .sched import check_options, get_runner, merged_options, modelled_ns, release, slot
from .state import InstalledModel, Runner, Slot
from .timing import NS, common_prefix, tokenize
from .wire import HTTPError

if TYPE_CHECKING:
    from .node import SimNode

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


def _reply(node: SimNode, req: GenRequest) -> list[str]:
    words = ["Simulated", " answer", " from", f" {node.name}", ":"]
    words += [" " + w for w in itertools.islice(itertools.cycle(_WORDS), max(0, node.reply_tokens))]
    words = words[:max(0, node.reply_tokens - 1)] + ["."]
    if req.json_format:
        words = ['{"', "answer", '":', ' "'] + [w.strip() + " " for w in words[:-1]] + ['"}']
    return words


class Generation:
    """One inference: runner, prompt evaluation in a slot, token stream."""

    def __init__(self, node: SimNode, req: GenRequest) -> None:
        self.node = node
        self.req = req
        self.result = GenResult()
        self.runner: Runner | None = None
        self.slot: Slot | None = None
        self.started = time.monotonic()

    async def start(self) -> None:
        """Get a runner; load_duration is all the time that took."""
        node, req = self.node, self.req
        self.runner, self.result.load_ns = await get_runner(node, req.model, req.options,
                                                            req.keep_alive_ns)
        node.last_options = merged_options(req.model, req.options)  # model params < options

    async def evaluate(self, slot: Slot) -> None:
        """Evaluate the part of the prompt the slot's cache lacks (at least one token);
        prompt_eval_count is the whole prompt even on a cache hit."""
        node, req = self.node, self.req
        assert self.runner is not None
        self.slot = slot
        prompt = req.prompt[-self.runner.num_ctx:]
        cached = min(common_prefix(slot.cache, prompt), max(0, len(prompt) - 1))
        seconds = node.timing.prompt_seconds(max(1, len(prompt) - cached))
        slot.cache = list(prompt)  # the slot's KV cache now holds this prompt
        node.prompt_tokens += len(prompt)
        node.cached_prompt_tokens += cached
        await node.timing.sleep(seconds)
        self.result.prompt_eval_count = max(1, len(prompt))
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
        res.total_ns = modelled_ns(node, time.monotonic() - self.started)
        res.total_ns = max(res.total_ns, res.load_ns + res.prompt_eval_ns + res.eval_ns)
        if self.slot is not None:  # the slot keeps the answer too, all but its last token
            answer = tokenize(res.thinking + ANSWER_JOIN + res.content)
            self.slot.cache = self.slot.cache + answer[:-1]

    def release(self) -> None:
        if self.runner is not None:
            release(self.node, self.runner)
            self.runner = None


@contextlib.asynccontextmanager
async def generation(node: SimNode, req: GenRequest) -> AsyncIterator[Generation]:
    """Get a runner, queue for its slot, evaluate the prompt; count a cancellation if the
    client leaves."""
    gen = Generation(node, req)
    try:
        await gen.start()
        assert gen.runner is not None
        async with slot(node, gen.runner, req.prompt) as chosen:
            await gen.evaluate(chosen)
            yield gen
    except (asyncio.CancelledError, ConnectionResetError):
        if not node.stopping:
            node.cancelled_generations += 1
        raise
    finally:
        gen.release()
