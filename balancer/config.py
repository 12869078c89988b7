"""Settings and node specs: the balancer's frozen inputs."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .params import Mode, ModelParams
from .tasks import TaskIdent

DEFAULT_MANAGEMENT_MESSAGE = (
    "model management is disabled on this balancer: the fleet's models are managed by "
    "desired_state.toml (edit the file and let ollafleet apply it)"
)


@dataclass(frozen=True)
class Settings:
    silence_timeout: float = 120.0  # seconds without a byte from a node; 0 disables
    connect_timeout: float = 1.0
    queue_timeout: float = 0.0  # 0 = answer 503 at once when every node is busy
    poll_interval: float = 5.0  # /api/tags and /api/ps polls; 0 disables the background loop
    refuse_management: bool = True
    management_message: str = DEFAULT_MANAGEMENT_MESSAGE
    # declared parameters per normalised model name, put into requests (balancer/params.py)
    apply_model_params: Mode = "fill"
    model_params: Mapping[str, ModelParams] = field(default_factory=dict)
    # Client connections: one with no request in progress (idle, or still sending its header)
    # is closed after idle_timeout s; at most max_connections are open (0 = from the open-files
    # limit, which the balancer raises to the hard limit at start).
    idle_timeout: float = 30.0
    max_connections: int = 0
    # Largest request body the balancer reads to route it: a chat with a long code context and
    # several full-size photos (base64 adds a third) fits; Ollama itself sets no limit.
    max_body: int = 64 * 1024 * 1024
    # Open WebUI's background task requests (title, tags, follow-ups...): how to tell them
    # (None: every request is a person's), and how long one waits behind people at most.
    tasks: TaskIdent | None = None
    task_timeout: float = 60.0
    # All the bodies it holds at once (budget.py); 0 = four of max_body. When full, a request
    # waits for room up to queue_timeout, then is answered 503.
    bodies_budget: int = 0
    # For replays only: the nodes run this many times faster than the durations they report
    # (a simulator's time_scale, e.g. 0.1 for 10x). The balancer's learned rates come from
    # those durations; it converts them to its own clock with this. 1 against real Ollama.
    time_scale: float = 1.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    url: str
    max_concurrent: int = 1
    models: tuple[str, ...] | list[str] | None = None  # None = whatever the node reports
    capability: int = 0
    speed: int = 0
    # models the balancer keeps loaded here (keep_alive -1) while the node is idle (warm.py)
    pinned: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")
