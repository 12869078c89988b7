"""Errors carry their policy: a permanent failure is tried once per file revision (and again
after the longest backoff), a temporary one backs off per item and recovers; /status says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import DesiredState
from reconciler.daemon.loop import Daemon
from reconciler.daemon.status import status_json
from reconciler.plan.retries import Backoff, Retries
from reconciler.targets.ollama import node_targets
from simulator import Fault


@pytest.fixture
async def node() -> AsyncIterator[Any]:
    from simulator import Simulator, Timing

    async with Simulator() as sim:
        yield await sim.add_node(name="gpu-1", port=0, timing=Timing.instant())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, node: Any, models: str) -> tuple[Daemon, Path, Clock]:
    file = tmp_path / "desired_state.toml"
    file.write_text(f'version = 1\n[[nodes]]\nname = "gpu-1"\nurl = "{node.url}"\n{models}')
    clock = Clock()

    def factory(state: DesiredState) -> list[Any]:
        return list(node_targets(state, timeout=1.0, stream_timeout=2.0))

    return Daemon(file, factory=factory, retries=Retries(clock=clock)), file, clock


def pulls(node: Any) -> int:
    return sum(1 for r in node.write_requests() if r.path == "/api/pull")


async def test_a_model_no_registry_has_is_tried_once_per_revision_and_after_the_backoff(tmp_path: Path,
                                                                                       node: Any) -> None:
    daemon, file, clock = make(tmp_path, node, '[models."nosuch:7b"]\n[models."qwq:32b"]\n')
    await daemon.run_pass("start")
    assert pulls(node) == 2 and node.installed_models() == ["qwq:32b"]
    assert daemon.last_pass is not None and daemon.last_pass["failed"] == 1
    for _ in range(3):                      # the retries after a failed pass: nothing sent again
        clock.now += 15
        await daemon.run_pass("retry")
        assert pulls(node) == 2
    assert daemon.last_pass["held"] == 1 and daemon.last_pass["failed"] == 0 and not daemon.last_pass["ok"]
    status = status_json(daemon, None)
    [item] = status["retries"]
    assert item["item"] == 'ollama/gpu-1:models."nosuch:7b"' and item["kind"] == "permanent"
    assert "file does not exist" in item["error"] and item["failures"] == 1
    assert item["next_retry"] == pytest.approx(clock.now - 45 + 600)
    assert daemon.revision is not None and item["attempted_revision"] == daemon.revision.sha256
    assert status["attempted_revision"] == daemon.revision.sha256 and status["applied_revision"] is None
    assert any("next try in" in e and "file does not exist" in e for e in status["errors"])
    assert daemon.retry_in(15) == pytest.approx(600 - 45)      # the service's retry waits for it

    clock.now += 600                        # the longest backoff has passed: one more try
    await daemon.run_pass("retry")
    assert pulls(node) == 3
    await daemon.run_pass("retry")
    assert pulls(node) == 3

    file.write_text(file.read_text() + "# a new revision\n")   # a newer file is tried at once
    await daemon.run_pass("file change")
    assert pulls(node) == 4

    file.write_text(file.read_text().replace('[models."nosuch:7b"]\n', ""))
    await daemon.run_pass("file change")
    assert daemon.retries.failures == {} and daemon.last_pass["ok"]
    assert status_json(daemon, None)["applied_revision"] == daemon.revision.sha256


async def test_a_temporary_node_failure_backs_off_and_recovers(tmp_path: Path, node: Any) -> None:
    daemon, _, clock = make(tmp_path, node, '[models."qwq:32b"]\n')
    node.set_fault(Fault.DISK_FULL)
    tried = []
    for step in [0, 5, 5, 5, 5, 5, 5, 15, 15, 15, 15, 15]:
        clock.now += step
        await daemon.run_pass("retry")
        if pulls(node) > len(tried):
            tried.append(clock.now)
    start = tried[0]
    assert [t - start for t in tried] == [0, 15, 45, 105]     # waits of 15, 30 and 60 s
    [item] = daemon.retries.to_json()
    assert item["kind"] == "temporary" and "no space left on device" in item["error"]
    assert item["failures"] == 4 and item["next_retry"] == tried[-1] + 120

    node.clear_fault()
    clock.now = item["next_retry"]
    await daemon.run_pass("retry")
    assert node.installed_models() == ["qwq:32b"]
    assert daemon.retries.failures == {} and daemon.last_pass is not None and daemon.last_pass["ok"]
    assert daemon.retry_in(15) == 15


def test_backoff_doubles_from_15_s_to_10_min_and_a_permanent_failure_waits_the_longest() -> None:
    b = Backoff()
    assert [b.delay(n, permanent=False) for n in range(1, 9)] == [15, 30, 60, 120, 240, 480, 600, 600]
    assert b.delay(1, permanent=True) == 600
