"""The desired state of an offline LLM network, as pydantic models of desired_state.toml.

Strict: unknown keys are errors and no value is coerced ("30000" is not a number). Checks
that span sections (references, duplicates, parameter ranges) live in checks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr
from pydantic_core import PydanticCustomError

from reconciler.config.values import Duration, Listen, SecretRef, Url


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class Balancer(Strict):
    listen: Listen = "127.0.0.1:11434"
    public_url: Url | None = None        # the URL Open WebUI should use; default built from listen
    silence_timeout: Duration = 120.0     # abandon an upstream that sends nothing this long (0: never)
    connect_timeout: Duration = 1.0
    queue_timeout: Duration = 600.0       # queue in the balancer, chosen by cost, up to this long (0: 503 at once)
    poll_interval: Duration = 5.0         # how often /api/tags and /api/ps are read from every node
    refuse_management: bool = True        # 403 for /api/pull, /api/create, ... sent through the balancer
    # declared model parameters in requests: fill what clients omit, enforce over theirs, or off
    apply_model_params: Literal["fill", "enforce", "off"] = "fill"
    idle_timeout: Duration = 30.0         # close a client connection with no request (or half a header) this long
    max_connections: int = Field(0, ge=0)  # open client connections at most (0: from the open-files limit)
    max_body_mb: int = Field(64, ge=1)    # largest request body read to route it (chat with images)
    task_timeout: Duration = 60.0         # an Open WebUI task request waits behind people this long at most


class Reconcile(Strict):
    interval: Duration = 60.0             # drift correction
    retry_interval: Duration = 15.0       # after a failed pass
    prune_models: bool = False            # delete models the file does not list
    suspend: bool = False                 # report drift, change nothing
    max_pulls_per_node: int = Field(1, ge=1)
    upload_concurrency: int = Field(2, ge=1)   # nodes receiving blobs at once (GGUF files, ollama_dir)
    status_listen: Listen = "127.0.0.1:11435"
    verify: bool = False                  # after a pass that changed Open WebUI or models: `ollafleet verify`'s listing check


def parse_redis_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://")):
        raise PydanticCustomError("redis_url", 'expected a URL like "redis://10.0.0.5:6379/0", got {value}',
                                  {"value": f'"{value}"' if isinstance(value, str) else repr(value)})
    if "@" in value.split("//", 1)[1].split("/", 1)[0]:
        raise PydanticCustomError("redis_url", 'put no password in the URL: write password = "{example}" '
                                  "and set that variable in the environment", {"example": "${REDIS_PASSWORD}"})
    return value


RedisUrl = Annotated[str, PlainValidator(parse_redis_url)]


class Cluster(Strict):
    """Several daemons sharing one Redis: balancers share slots and caches, one reconciles."""

    redis: RedisUrl                       # redis://host:6379/0 (no password here)
    password: SecretRef | None = None     # "${REDIS_PASSWORD}"
    name: str | None = Field(None, min_length=1)  # this daemon in /status; default: the host name
    # the fleet this file declares: every Redis key carries it, so fleets can share one Redis;
    # default: the file's name without .toml (set by load)
    fleet: str | None = Field(None, min_length=1)
    lease: Duration = 15.0                # the leader lease: a dead leader is replaced within this
    slot_lease: Duration = 10.0           # a dead balancer's slots free after this
    _file_stem: str = PrivateAttr(default="desired_state")

    @property
    def fleet_name(self) -> str:
        return self.fleet or self._file_stem

    @property
    def key_prefix(self) -> str:
        """What every Redis key of this fleet starts with."""
        return f"ollafleet:{self.fleet_name}:"


class Node(Strict):
    name: str = Field(min_length=1)
    url: Url
    capability: int = Field(0, ge=0)      # tier: higher can take the harder requests
    speed: int = Field(0, ge=0)           # tier: higher is preferred among equals
    max_concurrent: int = Field(1, ge=1)  # OLLAMA_NUM_PARALLEL on that node
    models: list[str] | None = None       # default: every model that does not name its nodes
    gpu_memory_gb: float | None = Field(None, gt=0)   # for plan's check that keep_loaded models fit


class ModelOpenWebUI(Strict):
    name: str | None = None               # display name; default: the model id
    description: str | None = None
    visibility: Literal["public", "private"] = "private"
    capabilities: dict[str, bool] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None


class Model(Strict):
    # where it comes from: a registry (default: the public one, by this model's name), a local
    # GGUF file pushed to each node, a copied Ollama models folder, or another declared model
    pull: str | None = None
    insecure: bool = False
    gguf: str | None = None
    ollama_dir: str | None = Field(None, min_length=1)   # a copied models folder (manifests/ + blobs/)
    from_: str | None = Field(None, alias="from")
    parameters: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None
    template: str | None = None
    digest: str | None = Field(None, pattern=r"^(sha256:)?[0-9a-f]{64}$")
    keep_loaded: bool = False
    enforce_params: bool = False          # the balancer overrides clients' values with the declared ones
    nodes: list[str] | None = None        # default: every node
    openwebui: ModelOpenWebUI | None = None

    @property
    def source(self) -> Literal["pull", "gguf", "from", "ollama_dir"]:
        if self.gguf is not None:
            return "gguf"
        if self.ollama_dir is not None:
            return "ollama_dir"
        if self.from_ is not None:
            return "from"
        return "pull"


class CodeExecution(Strict):
    enabled: bool = True
    engine: Literal["pyodide", "jupyter"] = "pyodide"


class Tasks(Strict):
    """Open WebUI's background requests to the task model, each on or off (None: left as is)."""
    follow_ups: bool | None = None        # after every answer: 3-5 suggested next questions
    title: bool | None = None             # after a new chat's first answer
    tags: bool | None = None              # after a new chat's first answer
    search_query: bool | None = None      # before an answer, when web search is on
    autocomplete: bool | None = None      # while a person types: one request per pause


class OpenWebUI(Strict):
    url: Url
    api_key: SecretRef | None = None
    admin_email: SecretRef | None = None
    admin_password: SecretRef | None = None
    admin_name: str = "Administrator"
    task_model: str | None = None
    code_interpreter: bool | None = None
    code_execution: CodeExecution | None = None
    default_user_role: Literal["pending", "user", "admin"] | None = None
    enable_signup: bool | None = None
    enable_api_keys: bool | None = None
    ollama_urls: list[Url] | None = None  # default: the balancer's public URL
    openai_api: bool | None = None
    tasks: Tasks | None = None


class Alerts(Strict):
    webhook: SecretRef | None = None      # a Mattermost/Rocket.Chat/Slack incoming webhook (JSON {"text": ...})
    command: list[str] | None = None      # run with the alert text as its last argument
    after: Duration = 300.0               # a node unreachable, or a target failing, this long before an alert
    max_per_hour: int = Field(20, ge=1)   # beyond this, alerts are logged and counted, not sent


class DesiredState(Strict):
    version: Literal[1]
    balancer: Balancer = Field(default_factory=Balancer)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    nodes: list[Node] = Field(default_factory=list)
    models: dict[str, Model] = Field(default_factory=dict)
    openwebui: OpenWebUI | None = None
    alerts: Alerts | None = None
    cluster: Cluster | None = None
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # the file's folder, set by load()

    def resolve_path(self, relative: str) -> Path:
        """A path written in the file (a GGUF file, a models folder), relative to the file's own folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def models_on(self, node: Node) -> list[str]:
        """The declared models that belong on `node`, in file order."""
        return [name for name, model in self.models.items()
                if (node.models is None or name in node.models)
                and (model.nodes is None or node.name in model.nodes)]

    def balancer_public_url(self) -> str:
        if self.balancer.public_url:
            return self.balancer.public_url
        host, _, port = self.balancer.listen.rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
        return f"http://{host}:{port}"
