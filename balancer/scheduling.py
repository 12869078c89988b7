"""Pure node choice: decide(snapshot, request) -> Pick | Wait | Reject.

No I/O, no clock, no randomness, no mutation. The rules are ollama_load_balancer's:
free Reliable nodes first in list order; else a free Unreliable node gets a second
chance, in turn (SecondChanceGiven marks who already had it this round; when every
candidate had one, the round restarts); else 503 at once (or Wait when a queue is on).
On top: only nodes that have the model; the node whose last conversation this request
continues (its KV cache) first; then a node that has the model loaded, then on disk,
then one not polled yet; faster tiers before slower ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .classify import RequestInfo
from .conversation import Conversation, continues


class Reliability(str, Enum):
    RELIABLE = "Reliable"
    UNRELIABLE = "Unreliable"
    SECOND_CHANCE_GIVEN = "SecondChanceGiven"


class Event(str, Enum):
    COMPLETED = "completed"  # the answer or stream ended properly
    FAILED = "failed"  # connect error, timeout, reset, cut or unterminated stream
    CLIENT_CANCELLED = "client_cancelled"  # the client went away: not the node's fault
    SECOND_CHANCE = "second_chance"  # an unreliable node is picked in its turn
    BUSY = "busy"  # the node answered 503 (its own queue is full): alive, not promoted
    CLIENT_ERROR = "client_error"  # it answered an error another node answered too: the client's


def next_reliability(current: Reliability, event: Event) -> Reliability:
    if event is Event.COMPLETED:
        return Reliability.RELIABLE
    if event is Event.FAILED:
        # A node that used its chance this round keeps the mark until the round resets.
        if current is Reliability.SECOND_CHANCE_GIVEN:
            return current
        return Reliability.UNRELIABLE
    if event is Event.SECOND_CHANCE and current is Reliability.UNRELIABLE:
        return Reliability.SECOND_CHANCE_GIVEN
    return current


@dataclass(frozen=True)
class NodeView:
    name: str
    order: int
    reliability: Reliability = Reliability.RELIABLE
    in_flight: int = 0
    max_concurrent: int = 1
    models: frozenset[str] | None = None  # None: not known yet (never polled, no static list)
    loaded: frozenset[str] = frozenset()
    capability: int = 0
    speed: int = 0
    draining: frozenset[str] = frozenset()
    conversation: Conversation | None = None  # the last conversation it ran (its KV cache)
    unfit: str | None = None  # why the polls rule it out (unreachable, not Ollama); None = fit

    @property
    def busy(self) -> bool:
        return self.in_flight >= self.max_concurrent


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeView, ...]


@dataclass(frozen=True)
class Pick:
    node: str
    reason: str
    second_chance: bool = False  # mark the node SecondChanceGiven
    new_round: bool = False  # clear every SecondChanceGiven mark first


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Reject:
    status: int
    code: str  # no_nodes | no_model | unfit | all_busy | exhausted
    message: str


Decision = Pick | Wait | Reject


def _model_rank(node: NodeView, model: str | None) -> int:
    if model is None or model in node.loaded:
        return 0
    return 1 if node.models is not None else 2


def _has_model(node: NodeView, model: str | None) -> bool:
    return model is None or node.models is None or model in node.models


def decide(
    snapshot: Snapshot,
    request: RequestInfo,
    exclude: frozenset[str] = frozenset(),
    can_wait: bool = False,
) -> Decision:
    """Choose a node for `request`; `exclude` holds the nodes this request already tried."""
    model = request.model
    if not snapshot.nodes:
        return Reject(503, "no_nodes", "no available servers: the balancer has no nodes")
    having = [n for n in snapshot.nodes if _has_model(n, model)]
    if not having:
        return Reject(404, "no_model", f"model '{request.model_as_sent or model}' not found")
    fit = [n for n in having if n.unfit is None]
    if not fit:
        why = "; ".join(f"{n.name} {n.unfit}" for n in having)
        return Reject(503, "unfit", f"no available servers: {why}")
    usable = [n for n in fit if model is None or model not in n.draining]
    untried = [n for n in usable if n.name not in exclude]
    if usable and not untried:
        if model is not None and not any(n.models is not None for n in having):
            # only nodes never polled were left, and none of them could serve it
            return Reject(404, "no_model", f"model '{request.model_as_sent or model}' not found")
        return Reject(502, "exhausted", "every node that can serve this request failed")
    free = [n for n in untried if not (request.uses_slot and n.busy)]
    if not free:
        if can_wait:
            return Wait("every node that has the model is busy")
        return Reject(503, "all_busy", "no available servers: every node is busy")

    def key(n: NodeView) -> tuple[int, int, int, int, int, int]:
        affinity = continues(n.conversation, request.conversation)
        return (n.busy, not affinity, _model_rank(n, model), -n.speed, -n.capability, n.order)

    reliable = sorted((n for n in free if n.reliability is Reliability.RELIABLE), key=key)
    if reliable:
        best = reliable[0]
        if request.conversation and continues(best.conversation, request.conversation):
            return Pick(best.name, "reliable, continues its last conversation")
        return Pick(best.name, "reliable")
    waiting = sorted((n for n in free if n.reliability is Reliability.UNRELIABLE), key=key)
    if waiting:
        return Pick(waiting[0].name, "second chance", second_chance=True)
    given = sorted(free, key=key)  # every free candidate already had its chance this round
    return Pick(given[0].name, "second chance, new round", second_chance=True, new_round=True)
