"""One real Open WebUI per test session, its Ollama connection on a simulated node; the seed
applied once on the fresh instance (`seeded`). Tests reset what they touch by applying again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from reconciler.config import DesiredState, load_text
from reconciler.plan import engine
from reconciler.plan.changes import PassReport, Plan
from reconciler.targets.openwebui import OpenWebUITarget, openwebui_targets
from simulator import SimNode, SimulatorThread, Timing
from tests.openwebui_harness import OpenWebUI, start_openwebui

T = TypeVar("T")

ADMIN = ("admin@example.com", "Adm1n-pass!")
ENV = {"OWUI_ADMIN_EMAIL": ADMIN[0], "OWUI_ADMIN_PASSWORD": ADMIN[1]}

SEED = """
version = 1

[models."codestral:22b"]
[models."codestral:22b".openwebui]
visibility = "public"
capabilities = {{ vision = false, citations = false }}
params = {{ num_ctx = 30000, num_predict = 29000, temperature = 0.1, top_p = 0.95, repeat_penalty = 1.15 }}

[models."qwq:32b".openwebui]
visibility = "public"
capabilities = {{ vision = false, citations = false }}
params = {{ num_ctx = 14000, num_predict = 13000 }}
{extra_models}
[openwebui]
url = "{url}"
{credentials}
task_model = "codestral:22b"
code_interpreter = false
code_execution = {{ enabled = true, engine = "pyodide" }}
default_user_role = "user"
enable_signup = true
enable_api_keys = true
openai_api = false
ollama_urls = ["{ollama}"]
"""

PASSWORD_CREDENTIALS = 'admin_email = "${OWUI_ADMIN_EMAIL}"\nadmin_password = "${OWUI_ADMIN_PASSWORD}"'


@dataclass
class Pass:
    """One plan + apply on the `openwebui` target, with every write request it sent."""

    plan: Plan
    report: PassReport | None
    writes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Instance:
    owui: OpenWebUI
    node: SimNode
    ollama_url: str
    first: Pass                     # the seed applied on the fresh instance
    _token: str | None = None

    def state(self, *, replace: dict[str, str] | None = None, extra_models: str = "",
              credentials: str = PASSWORD_CREDENTIALS, env: dict[str, str] | None = None) -> DesiredState:
        text = SEED.format(url=self.owui.url, ollama=self.ollama_url, extra_models=extra_models,
                           credentials=credentials)
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        return load_text(text, env={**ENV, **(env or {})})

    def admin(self) -> httpx.Client:
        """An admin session straight to Open WebUI, for reading back and for drift."""
        if self._token is None:
            self._token = httpx.post(self.owui.url + "/api/v1/auths/signin", timeout=30,
                                     json={"email": ADMIN[0], "password": ADMIN[1]}).json()["token"]
        return httpx.Client(base_url=self.owui.url, timeout=30, headers={"Authorization": f"Bearer {self._token}"})


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a thread of its own: leaves pytest-asyncio's loop alone."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def in_thread_call(fn: Callable[..., T], *args: Any) -> T:
    """A blocking call that runs its own event loop (the CLI), on a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def run(state: DesiredState, *, apply: bool = True) -> Pass:
    """Plan (and apply) `state` on the openwebui target, as `ollafleet apply` does."""
    return in_thread(_run(state, apply))


async def _run(state: DesiredState, apply: bool) -> Pass:
    t0 = time.monotonic()
    targets = openwebui_targets(state)
    assert len(targets) == 1
    target = targets[0]
    assert isinstance(target, OpenWebUITarget)
    try:
        the_plan = await engine.plan(targets)
        report = await engine.apply(the_plan, targets) if apply else None
    finally:
        await target.close()
    return Pass(the_plan, report, list(target.api.writes), time.monotonic() - t0)


def entry(client: httpx.Client, model_id: str) -> dict[str, Any]:
    response = client.get("/api/v1/models/model", params={"id": model_id})
    response.raise_for_status()
    return dict(response.json())


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread() as thread:
        yield thread


@pytest.fixture(scope="session")
def instance(sim: SimulatorThread) -> Iterator[Instance]:
    node = sim.add_node(name="gpu-1", models=["codestral:22b", "qwq:32b"], timing=Timing.instant())
    owui = start_openwebui(node.url)          # fresh: no admin, onboarding
    try:
        inst = Instance(owui, node, node.url, Pass(Plan(), None))
        inst.first = run(inst.state())
        yield inst
    finally:
        owui.stop()


@pytest.fixture
def converged(instance: Instance) -> Instance:
    """The instance back at the seed's state before a test (0 writes when it already is)."""
    result = run(instance.state())
    assert result.report is not None and result.report.ok, result.report and result.report.to_json()
    return instance
