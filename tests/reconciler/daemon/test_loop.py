"""The daemon's pass loop with stand-in targets: last good state, one pass at a time, suspend."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.config import DesiredState
from reconciler.daemon.loop import Daemon
from tests.reconciler.plan.test_engine import FakeTarget

GOOD = 'version = 1\n[models."m:1"]\n[models."n:1"]\n'


def make(tmp_path: Path, text: str = GOOD) -> tuple[Daemon, Path, dict[str, FakeTarget]]:
    file = tmp_path / "desired_state.toml"
    file.write_text(text)
    made: dict[str, FakeTarget] = {}
    have: dict[str, object] = {}

    def factory(state: DesiredState) -> list[FakeTarget]:
        t = FakeTarget("fake", have, {name: 1 for name in state.models}, delay=0.01)
        made["last"] = t
        return [t]

    return Daemon(file, factory=factory), file, made


async def test_pass_applies_and_records(tmp_path: Path) -> None:
    daemon, _, made = make(tmp_path)
    report = await daemon.run_pass("start")
    assert report is not None and report.ok
    assert made["last"].have == {"m:1": 1, "n:1": 1}
    assert daemon.last_pass is not None and daemon.last_pass["applied"] == 2
    assert daemon.revision is not None and len(daemon.revision.sha256) == 64
    assert (await daemon.run_pass("interval")) is not None and daemon.last_pass["applied"] == 0


async def test_broken_save_changes_nothing_and_keeps_last_good(tmp_path: Path) -> None:
    daemon, file, made = make(tmp_path)
    await daemon.run_pass("start")
    good_rev = daemon.revision
    file.write_text('version = 1\n[models."m:1"]\nkeep_loded = true\n')   # typo: would drop n:1
    assert await daemon.run_pass("file change") is None
    assert daemon.file_errors and "did you mean" in daemon.file_errors[0]
    assert daemon.revision == good_rev and "n:1" in made["last"].have
    # the interval still enforces the last good state
    made["last"].have.pop("n:1")
    await daemon.run_pass("interval")
    assert made["last"].have == {"m:1": 1, "n:1": 1}
    # the next good save is applied
    file.write_text('version = 1\n[models."m:1"]\n[models."o:1"]\n')
    await daemon.run_pass("file change")
    assert daemon.file_errors == [] and made["last"].have == {"m:1": 1, "o:1": 1}
    assert daemon.revision != good_rev


async def test_requests_during_a_pass_queue_exactly_one_more(tmp_path: Path) -> None:
    daemon, _, _ = make(tmp_path)
    runner = asyncio.create_task(daemon.run())
    try:
        daemon.request("start")
        while not daemon.running_pass:
            await asyncio.sleep(0)
        for _ in range(5):
            daemon.request("file change")
        await daemon.wait_for_pass(5)
        await daemon.wait_for_pass(5)
        await asyncio.sleep(0.1)
        assert daemon.counters.passes == 2 and not daemon.running_pass
    finally:
        runner.cancel()


async def test_suspend_reports_drift_and_changes_nothing(tmp_path: Path) -> None:
    daemon, _, made = make(tmp_path, GOOD.replace("version = 1\n", "version = 1\n[reconcile]\nsuspend = true\n"))
    await daemon.run_pass("start")
    assert made["last"].have == {}
    assert daemon.targets["fake"].drift == ['+ "m:1" = 1', '+ "n:1" = 1']
    assert daemon.last_pass is not None and daemon.last_pass["suspended"]


async def test_failed_pass_asks_for_a_retry(tmp_path: Path) -> None:
    daemon, _, _ = make(tmp_path)
    asked = []
    daemon.on_pass_failed = lambda: asked.append(True)
    from reconciler.errors import TemporaryError

    def failing(state: DesiredState) -> list[FakeTarget]:
        return [FakeTarget("fake", {}, {"m": 1}, fail_on={"m": TemporaryError("node busy")})]

    daemon.factory = failing
    await daemon.run_pass("start")
    assert asked == [True] and daemon.targets["fake"].errors == ["m: node busy"]
    assert daemon.counters.failed_passes == 1


async def test_a_pass_that_raises_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    daemon, _, made = make(tmp_path)
    calls = []
    good_factory = daemon.factory

    def broken_once(state: DesiredState) -> list[FakeTarget]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in a target")
        return good_factory(state)  # type: ignore[return-value]

    daemon.factory = broken_once
    failed = []
    daemon.on_pass_failed = lambda: failed.append(True)
    runner = asyncio.create_task(daemon.run())
    try:
        daemon.request("start")
        await daemon.wait_for_pass(5)
        assert daemon.pass_error == "RuntimeError: a bug in a target" and failed == [True]
        from reconciler.daemon.status import status_json
        assert "the last pass failed unexpectedly: RuntimeError: a bug in a target" in status_json(daemon, None)["errors"]
        daemon.request("retry")          # the runner is still alive
        await daemon.wait_for_pass(5)
        assert daemon.pass_error is None and made["last"].have == {"m:1": 1, "n:1": 1}
    finally:
        runner.cancel()


async def test_interval_with_a_broken_file_still_enforces_the_last_good_state(tmp_path: Path) -> None:
    daemon, file, made = make(tmp_path)
    await daemon.run_pass("start")
    file.write_text("version = 1\n[models.\n")
    made["last"].have.clear()                       # drift meanwhile
    assert await daemon.run_pass("file change", "interval") is not None
    assert made["last"].have == {"m:1": 1, "n:1": 1} and daemon.file_errors
