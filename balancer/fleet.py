"""The balancer's only mutable state: the node table, in-flight counts, poll results.

Everything here is synchronous, so `decide(fleet.snapshot(), ...)` followed by
`fleet.reserve(pick)` with no await in between is atomic on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .classify import normalize_model
from .config import NodeSpec
from .conversation import Conversation
from .histogram import Histogram
from .knowledge import Knowledge
from .scheduling import Event, NodeView, Pick, Reliability, Snapshot, next_reliability

if TYPE_CHECKING:
    from .shared import Shared

log = logging.getLogger("balancer")


@dataclass(frozen=True)
class NodeState:
    name: str
    url: str
    reliability: str
    in_flight: int
    max_concurrent: int
    models: tuple[str, ...] | None  # None = not known yet
    loaded: tuple[str, ...]
    reachable: bool | None  # None = not polled yet
    last_error: str | None
    unfit: str | None = None  # why the polls keep requests away from it; None = a candidate
    runner_model: str | None = None  # the model its GPU holds, as sent last or polled
    runner_num_ctx: int | None = None  # ... loaded with this num_ctx (None: the default)
    learned: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> rates
    queued: int = 0  # requests waiting in the balancer's queue for this node
    warming: str | None = None  # the model the warmer is loading there (warm.py)


@dataclass
class TaskMetrics:
    """Open WebUI's background task requests (tasks.py), counted apart from people's."""
    queued: int = 0  # waiting in the balancer now
    served_total: int = 0  # sent to a node
    timed_out_total: int = 0  # answered 503 after task_timeout in the queue
    model_loads_caused: int = 0  # sent to a node that did not hold the task model: should be 0
    preempted_total: int = 0  # stopped before its answer began, for a person; queued again
    wait_seconds: Histogram = field(default_factory=Histogram)

    def as_dict(self) -> dict[str, object]:
        return {k: v.as_dict() if isinstance(v, Histogram) else v for k, v in self.__dict__.items()}


@dataclass
class Metrics:
    requests_total: int = 0
    failures_total: int = 0
    rejected_total: int = 0
    client_cancelled_total: int = 0
    retries_total: int = 0
    in_flight: int = 0
    queued: int = 0
    connections_open: int = 0
    connections_refused_total: int = 0  # at max_connections: refused, or an idle one closed
    connections_timed_out_total: int = 0  # closed: no full header (or body) within idle_timeout
    node_requests: dict[str, int] = field(default_factory=dict)
    node_failures: dict[str, int] = field(default_factory=dict)
    model_loads_caused: int = 0  # requests sent where the estimate counted a model (re)load
    warmer_loads: int = 0  # loads the balancer's warmer started (warm.py), not requests
    queue_wait_seconds: Histogram = field(default_factory=Histogram)
    first_token_seconds: Histogram = field(default_factory=Histogram)
    tasks: TaskMetrics = field(default_factory=TaskMetrics)  # a share of the counts above
    # called with ("first_token", model, seconds) and ("load", model, 1.0) as they happen
    # (the daemon's status page keeps its history from them); not part of /status
    _listeners: list[Callable[[str, str | None, float], None]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {k: v.as_dict() if isinstance(v, (Histogram, TaskMetrics)) else v
                for k, v in self.__dict__.items() if not k.startswith("_")}

    def listen(self, listener: Callable[[str, str | None, float], None]) -> None:
        self._listeners.append(listener)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    def observe_first_token(self, model: str | None, seconds: float) -> None:
        self.first_token_seconds.observe(seconds)
        for listener in self._listeners:
            listener("first_token", model, seconds)

    def count_model_load(self, model: str | None) -> None:
        self.model_loads_caused += 1
        for listener in self._listeners:
            listener("load", model, 1.0)


class Node:
    def __init__(self, spec: NodeSpec, order: int) -> None:
        self.spec = spec  # also sets self.static
        self.order = order
        self.reliability = Reliability.RELIABLE
        self.in_flight = 0
        self.remote = 0  # slots other balancers of the cluster hold (shared.py)
        self.reported: frozenset[str] | None = None
        self.loaded: frozenset[str] = frozenset()
        self.reachable: bool | None = None
        self.last_error: str | None = None
        self.poll_error: str | None = None  # what the last failed poll found
        self.foreign: str | None = None  # set when its answers are not Ollama's
        self.failing: dict[str, str] = {}  # poll path -> the server error it answered
        self.draining: Counter[str] = Counter()  # model -> drains under way
        self.conversation: Conversation | None = None
        self.removed = False

    @property
    def spec(self) -> NodeSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: NodeSpec) -> None:
        self._spec = spec
        # normalised once here, not on every snapshot (one per request)
        self.static: frozenset[str] | None = None if spec.models is None else frozenset(
            normalize_model(m) for m in spec.models)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def models(self) -> frozenset[str] | None:
        if self.foreign is not None:
            return frozenset()  # not an Ollama server: it serves no model
        if self.reported is None:
            return self.static
        return self.reported if self.static is None else self.reported & self.static

    @property
    def unfit(self) -> str | None:
        """Why the polls rule this node out until a poll finds it well again."""
        if self.foreign is not None:
            return f"does not answer like Ollama ({self.foreign})"
        if self.reachable is False:
            return f"is unreachable by the last poll ({self.poll_error})"
        if self.failing:
            return f"answers its polls with an error ({'; '.join(self.failing.values())})"
        return None

    def view(self) -> NodeView:
        return NodeView(self.name, self.order, self.reliability, self.in_flight + self.remote,
                        self.spec.max_concurrent, self.models, self.loaded,
                        self.spec.capability, self.spec.speed, frozenset(self.draining),
                        self.conversation, self.unfit)

    def state(self) -> NodeState:
        models = self.models
        return NodeState(self.name, self.spec.url, self.reliability.value, self.in_flight,
                         self.spec.max_concurrent, None if models is None else tuple(sorted(models)),
                         tuple(sorted(self.loaded)), self.reachable, self.last_error, self.unfit)


class _Described:
    """Formats the node table only when a log line is actually emitted."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def __str__(self) -> str:
        return self.fleet.describe()


class Fleet:
    def __init__(self, specs: list[NodeSpec]) -> None:
        self.nodes: dict[str, Node] = {}
        self.metrics = Metrics()
        self.knowledge = Knowledge()
        self.table = _Described(self)
        self._changed = asyncio.Event()
        self.version = 0  # counts notify(): what a plan made before a change can't know
        self.shared: Shared | None = None  # [cluster]: slots and caches shared through Redis
        self.warming: dict[str, str] = {}  # node -> the model the warmer is loading there
        self.replace(specs)

    # -- reading -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(n.view() for n in self.nodes.values()))

    def any_free(self) -> bool:
        """Whether some fit node has a free slot: what `decide` needs to pick a request that
        names no model. The check before every body is read, without building a snapshot."""
        return any(n.unfit is None and n.in_flight + n.remote < n.spec.max_concurrent
                   for n in self.nodes.values())

    def states(self) -> list[NodeState]:
        return [replace(n.state(), warming=self.warming.get(n.name), **self.knowledge.facts(n.name))
                for n in self.nodes.values()]

    def describe(self) -> str:
        return " | ".join(
            f"{n.name}: {n.reliability.value}, {n.in_flight}/{n.spec.max_concurrent} busy"
            for n in self.nodes.values()) or "no nodes"

    # -- changing ------------------------------------------------------------------
    def reserve(self, pick: Pick, slot: bool = True,
                conversation: Conversation | None = None, what: object = "request") -> Node:
        """Take the picked node; `slot=False` for light requests that don't occupy it."""
        node = self.nodes[pick.node]
        if pick.new_round:
            for other in self.nodes.values():
                if other.reliability is Reliability.SECOND_CHANCE_GIVEN:
                    other.reliability = Reliability.UNRELIABLE
        if pick.second_chance:
            node.reliability = next_reliability(node.reliability, Event.SECOND_CHANCE)
        if not slot:
            return node
        node.in_flight += 1
        if conversation is not None:
            node.conversation = conversation
        self.metrics.in_flight += 1
        self.metrics.node_requests[node.name] = self.metrics.node_requests.get(node.name, 0) + 1
        log.info("%s -> %s (%s); %s", what, node.name, pick.reason, self.table)
        return node

    def release(self, node: Node, event: Event, error: str | None = None,
                slot: bool = True) -> None:
        if slot:
            node.in_flight -= 1
            self.metrics.in_flight -= 1
        elif event is Event.COMPLETED and node.reliability is Reliability.RELIABLE:
            return
        before = node.reliability
        node.reliability = next_reliability(before, event)
        if event is Event.FAILED:
            node.last_error = error
            self.metrics.failures_total += 1
            self.metrics.node_failures[node.name] = self.metrics.node_failures.get(node.name, 0) + 1
        elif event is Event.CLIENT_CANCELLED:
            self.metrics.client_cancelled_total += 1
        what = f"{event.value}" + (f" ({error})" if error else "")
        if before is not node.reliability:
            what += f", {before.value} -> {node.reliability.value}"
        level = logging.WARNING if event is Event.FAILED else logging.INFO
        log.log(level, "request done on %s: %s; %s", node.name, what, self.table)
        self.notify()

    def replace(self, specs: list[NodeSpec]) -> tuple[list[Node], list[Node]]:
        """Swap the node list; in-flight streams on removed nodes finish undisturbed."""
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        old = self.nodes
        added: list[Node] = []
        new: dict[str, Node] = {}
        for order, spec in enumerate(specs):
            node = old.get(spec.name)
            if node is None or node.spec.url != spec.url:
                node = Node(spec, order)
                added.append(node)
            node.spec, node.order = spec, order
            new[spec.name] = node
        removed = [n for name, n in old.items() if new.get(name) is not n]
        for n in removed:
            n.removed = True
        self.nodes = new
        if added or removed:
            log.info("nodes changed (+%s -%s); %s", [n.name for n in added],
                     [n.name for n in removed], self.table)
        self.notify()
        return added, removed

    def set_draining(self, name: str, model: str, draining: bool) -> None:
        """Counted: a model stays drained until every drain of it has ended."""
        node = self.nodes[name]
        model = normalize_model(model)
        if draining:
            node.draining[model] += 1
        elif node.draining[model] > 1:
            node.draining[model] -= 1
        else:
            node.draining.pop(model, None)
        if self.shared is not None:  # the other balancers of the cluster drain it too
            self.shared.drained(name, model, draining)
        self.notify()

    def forget_model(self, node: Node, model: str) -> None:
        """The node said it lacks `model`: believe it until the next poll."""
        if node.reported is not None and model in node.reported:
            node.reported = node.reported - {model}
            node.loaded = node.loaded - {model}
            log.info("%s no longer has %s; %s", node.name, model, self.table)

    def update_poll(self, node: Node, models: frozenset[str] | None,
                    loaded: frozenset[str] | None, error: str | None,
                    foreign: bool = False) -> None:
        """A poll's result; `error` alone means unreachable, with `foreign` it answered
        something that is not Ollama's."""
        was, was_unfit = node.reachable, node.unfit
        node.reachable = error is None or foreign
        node.poll_error = error
        node.foreign = error if foreign else None
        if error is None:
            if models is not None:
                if node.reported is not None and models != node.reported:
                    log.info("poll: %s models %s", node.name, " ".join(
                        [f"+{m}" for m in sorted(models - node.reported)]
                        + [f"-{m}" for m in sorted(node.reported - models)]))
                node.reported = models
            if loaded is not None:
                node.loaded = loaded
                self.knowledge.polled(node.name, loaded)
        else:
            node.last_error = error
        if was_unfit is None and node.unfit is not None:
            log.warning("poll: %s %s: no requests go there until a poll finds it well; %s",
                        node.name, node.unfit, self.table)
        elif was is not node.reachable or was_unfit is not None and node.unfit is None:
            log.info("poll: %s is %s%s; %s", node.name,
                     "reachable" if node.reachable else "unreachable",
                     f" ({error})" if error else "", self.table)
        self.notify()

    def poll_failing(self, node: Node, path: str, error: str | None) -> None:
        """A poll of `path` answered a server error (5xx), or (None) did not: a node whose
        polls fail is no candidate, like one that does not answer like Ollama."""
        was_unfit = node.unfit
        if error is None:
            if node.failing.pop(path, None) is None:
                return
        else:
            node.failing[path] = error
            node.last_error = error
        if was_unfit is None and node.unfit is not None:
            log.warning("poll: %s %s: no requests go there until a poll finds it well; %s",
                        node.name, node.unfit, self.table)
        elif was_unfit is not None and node.unfit is None:
            log.info("poll: %s answers its polls again; %s", node.name, self.table)
        self.notify()

    # -- waiting -------------------------------------------------------------------
    def notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait for the next change, at most `timeout` s; False: none came."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True
