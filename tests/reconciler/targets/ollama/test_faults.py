"""One faulty node does not stop the others; it is named in the report, and the next pass retries."""

from __future__ import annotations

import time

import pytest
from typing import Any

from simulator import Fault

from .conftest import add_nodes, apply, desired, failures, plan

MODELS = '[models."codestral:22b"]\nkeep_loaded = true\n[models."qwq:32b"]\n'


async def test_refusing_and_silent_nodes_are_reported_and_the_others_converge(sim: Any) -> None:
    good, refusing, silent = await add_nodes(sim, 3)
    refusing.set_fault(Fault.REFUSE)
    silent.set_fault(Fault.NO_ANSWER)
    state = desired([good, refusing, silent], MODELS)
    t0 = time.monotonic()
    report = await apply(state, timeout=0.5)
    assert time.monotonic() - t0 < 5
    problems = {p.target: p.message for p in report.plan.problems}
    assert set(problems) == {"ollama/gpu-2", "ollama/gpu-3"}
    assert problems["ollama/gpu-2"].startswith(f"unreachable: cannot connect to {refusing.url}")
    assert "did not answer" in problems["ollama/gpu-3"]
    assert report.failed == () and not report.ok
    assert sorted(good.installed_models()) == ["codestral:22b", "qwq:32b"]


async def test_pull_failing_mid_stream_reports_ollamas_message_and_the_next_pass_retries(sim: Any) -> None:
    good, bad = await add_nodes(sim, 2)
    bad.install("codestral:22b")
    bad.set_fault(Fault.DISK_FULL)
    state = desired([good, bad], MODELS)
    report = await apply(state)
    [failed] = failures(report)
    assert failed.startswith('ollama/gpu-2:models."qwq:32b": POST /api/pull qwq:32b: ')
    assert failed.endswith("no space left on device")
    assert (await plan(state)).changes[0].target == "ollama/gpu-2"      # only the failed pull is left
    assert sorted(good.installed_models()) == ["codestral:22b", "qwq:32b"]
    bad.clear_fault()
    report = await apply(state)
    assert failures(report) == [] and [r.change.target for r in report.results] == ["ollama/gpu-2"]
    assert (await plan(state)).changes == ()


async def test_error_line_and_broken_streams_fail_the_pull(sim: Any) -> None:
    nodes = await add_nodes(sim, 5)
    faults = (Fault.FAIL_MID_STREAM, Fault.RST_MID_STREAM, Fault.HANG_AFTER_HEADERS, Fault.HTTP_500, Fault.FIN_MID_STREAM)
    for node, fault in zip(nodes, faults):
        node.set_fault(fault, paths=("/api/pull",), message="pull model manifest: file does not exist")
    report = await apply(desired(nodes, '[models."qwq:32b"]\n'), stream_timeout=0.5)
    messages = {r.change.target: r.message for r in report.failed}
    assert set(messages) == {f"ollama/gpu-{i}" for i in range(1, 6)}
    assert all(n.installed_models() == [] for n in nodes)
    assert "500" in messages["ollama/gpu-4"]
    assert messages["ollama/gpu-1"].endswith("pull model manifest: file does not exist")
    assert "dropped the connection" in messages["ollama/gpu-2"] or "failed" in messages["ollama/gpu-2"]
    assert "did not answer" in messages["ollama/gpu-3"]


async def test_registry_offline_is_a_failed_pull_with_the_dial_error(sim: Any) -> None:
    [node] = await add_nodes(sim, 1)
    node.registry_online = False
    report = await apply(desired([node], '[models."qwq:32b"]\n'))
    [failed] = report.failed
    assert "pull model manifest" in failed.message


async def test_invalid_parameter_is_refused_before_sending(sim: Any) -> None:
    from reconciler.config.schema import DesiredState

    [node] = await add_nodes(sim, 1)
    node.install("codestral:22b")
    good = desired([node], '[models."codestral:22b"]\n[models.c30]\nfrom = "codestral:22b"\nparameters = { num_ctx = 30000 }\n')
    data = good.model_dump(by_alias=True)
    data["models"]["c30"]["parameters"] = {"num_ctx": "30000"}   # what the file check would refuse
    bad = DesiredState.model_validate(data, strict=False)
    report = await apply(bad)
    [failed] = report.failed
    assert "num_ctx" in failed.message and "not sent" in failed.message
    assert node.write_requests() == []


async def test_interrupted_apply_cancels_the_pull_and_the_next_pass_finishes(sim: Any) -> None:
    import asyncio

    from simulator import Timing

    from reconciler.plan import engine
    from reconciler.plan.changes import Status

    from .conftest import targets

    node = await sim.add_node(name="gpu-1", port=0, timing=Timing(pull_bps=1e9, pull_tick=0.01))
    state = desired([node], '[models."qwq:32b"]\n')
    started = asyncio.Event()
    results: list[Any] = []

    class Progress:
        def update(self, task: str, completed: float, total: float | None, status: str = "") -> None:
            if completed:
                started.set()

        def done(self, task: str, status: str = "") -> None:
            pass

    ts = targets(state)
    the_plan = await engine.plan(ts)
    run = asyncio.ensure_future(engine.apply(the_plan, ts, progress=Progress(), on_result=results.append))
    await asyncio.wait_for(started.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [r.status for r in results] == [Status.CANCELLED]
    await node.wait_for(lambda: any(r.client_disconnected for r in node.requests if r.path == "/api/pull"))
    assert node.installed_models() == []
    for t in ts:
        await t.close()
    node.timing = Timing.instant()
    assert failures(await apply(state)) == [] and node.installed_models() == ["qwq:32b"]
