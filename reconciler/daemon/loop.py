"""Passes, one at a time: re-read the file, plan, apply (or only plan when suspended), record.

Triggers (a file change, the interval, SIGHUP, a retry after a failure) only *request* a pass;
a request that arrives during a pass queues exactly one more. A broken file is reported and
ignored: the last good state stays in force.

A file change is read at once (`file_changed`): the balancer gets its part immediately, and a
pass in progress makes way at its next safe point: it starts no further change, abandons the
pulls under way (Ollama keeps the downloaded part; the next pull resumes from it) and lets every
other change under way (a create, an upload, an Open WebUI write) run to its end; then the next
pass plans from the newer file.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.config import DesiredState
from reconciler.config.load import load_bytes
from reconciler.daemon.activity import Activity
from reconciler.daemon.revision import Revision, revision_of
from reconciler.errors import ConfigError
from reconciler.plan import engine, render
from reconciler.plan.changes import Change, ChangeResult, PassReport, Plan, Status
from reconciler.plan.one_pass import run_pass
from reconciler.plan.retries import Retries
from reconciler.progress import LogProgress
from reconciler.targets import AnyTarget, build_targets

log = logging.getLogger("ollafleet.daemon")

TargetFactory = Callable[[DesiredState], Sequence[AnyTarget]]
FILE_TRIGGERS = {"file change", "SIGHUP"}   # passes asked for because the file may have changed


@dataclass
class TargetRecord:
    """What the last pass saw and did on one target."""

    last_pass: float = 0.0
    pass_started: float = 0.0     # time.time() when that pass began: what it saw is from then on
    ok: bool = True
    applied: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Counters:
    passes: int = 0
    failed_passes: int = 0
    changes_applied: int = 0
    changes_failed: int = 0


class Daemon:
    def __init__(self, path: str | Path, *, factory: TargetFactory = build_targets,
                 on_new_state: Callable[[DesiredState], None] | None = None,
                 wrap: Callable[[Sequence[AnyTarget]], Sequence[AnyTarget]] | None = None,
                 env: dict[str, str] | None = None, retries: Retries | None = None) -> None:
        self.path = Path(path)
        self.factory = factory
        self.on_new_state = on_new_state
        self.wrap = wrap
        self.env = env
        self.state: DesiredState | None = None
        self.revision: Revision | None = None
        self.pass_revision: Revision | None = None   # the file the running (or last) pass applies
        self.applied_revision: str | None = None     # sha256 of the last file a pass fully applied
        self.retries = retries or Retries()          # each failed item's error and next retry
        self._problems = False                       # the last pass could not read some target
        self.file_errors: list[str] = []
        self.targets: dict[str, TargetRecord] = {}
        self.counters = Counters()
        self.last_pass: dict[str, Any] | None = None
        self.pass_error: str | None = None     # a pass that raised (a bug), until the next one ends
        self.needs_restart: list[str] = []     # settings changed in the file that only a restart applies
        self.listening: dict[str, str] = {}    # the addresses it started with (set by the service)
        self.on_pass_failed: Callable[[], None] = lambda: None
        self.gate: Callable[[], Awaitable[bool]] | None = None   # [cluster]: False on a standby
        self.cluster_status: Callable[[], dict[str, Any]] | None = None
        self._wake = asyncio.Event()
        self._reasons: list[str] = []
        self.running_pass = False
        self.activity = Activity()       # what the running pass does, for /status
        self.history: deque[dict[str, Any]] = deque(maxlen=10)   # the last passes, newest last
        self.pass_done = asyncio.Condition()
        self._reading = asyncio.Lock()
        self._newer = asyncio.Event()          # set when a newer file arrives during a pass
        self.verified: dict[str, Any] | None = None   # the last `[reconcile] verify` run (listing part)
        self._verifying: asyncio.Task[None] | None = None
        self.balancer_port: int | None = None   # the port this daemon's balancer listens on, once started

    @property
    def file_waiting(self) -> bool:
        """A newer file is in force for the balancer while a pass still applies an older one."""
        return self.running_pass and self.revision is not self.pass_revision

    # -- the file -------------------------------------------------------------------------
    async def reload(self) -> bool:
        """Read the file; on success it becomes the state in force. False when it is broken."""
        async with self._reading:
            return await self._reload()

    async def _reload(self) -> bool:
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            return self._broken([f"{self.path}: cannot read: {exc.strerror or exc}"])
        if self.revision is not None and self.revision.same_content(content) and not self.file_errors:
            return True
        try:
            state = load_bytes(content, self.path, env=self.env)
        except ConfigError as exc:
            return self._broken([str(p) for p in exc.problems])
        changed = self.state is not None
        self.state = state
        # git runs in a thread: this loop also relays every chat stream
        self.revision = await asyncio.to_thread(revision_of, self.path, content)
        self.file_errors = []
        log.info("%s file %s (sha256 %s%s)", "loaded new" if changed else "loaded", self.path,
                 self.revision.sha256[:12], f", commit {self.revision.git_commit[:10]}" if self.revision.git_commit else "")
        if self.on_new_state:
            self.on_new_state(state)
        return True

    def _broken(self, problems: list[str]) -> bool:
        if problems != self.file_errors:
            for line in problems:
                log.error("file rejected, the last good state stays in force: %s", line)
        self.file_errors = problems
        return False

    # -- triggers ---------------------------------------------------------------------------
    async def file_changed(self, reason: str = "file change") -> None:
        """Read the file now (the balancer's part applies at once), then ask for a pass."""
        before = self.revision
        await self.reload()
        if self.running_pass and self.revision is not before:
            log.info("a newer file waits: the pass in progress starts no further change, abandons "
                     "its pulls (they resume next pass) and the next pass applies the newer file")
            self._newer.set()
        self.request(reason)

    def request(self, reason: str) -> None:
        self._reasons.append(reason)
        self._wake.set()

    async def run(self) -> None:
        """The runner: one pass per wake-up, forever. A pass that raises is reported, and the
        next trigger runs a new one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            reasons, self._reasons = self._reasons, []
            try:
                await self.run_pass(*dict.fromkeys(reasons))
            except Exception as exc:   # a bug must not end reconciling for good
                log.exception("pass failed unexpectedly")
                self.pass_error = f"{type(exc).__name__}: {exc}"
                self.counters.passes += 1
                self.counters.failed_passes += 1
                self.on_pass_failed()

    # -- one pass ---------------------------------------------------------------------------
    async def run_pass(self, *reasons: str) -> PassReport | None:
        self.running_pass = True
        try:
            return await self._pass(set(reasons) or {"request"})
        finally:
            self.running_pass = False
            self.activity.end()
            async with self.pass_done:
                self.pass_done.notify_all()

    async def _pass(self, reasons: set[str]) -> PassReport | None:
        good = await self.reload()
        state = self.state
        if state is None:
            return None
        if not good and reasons <= FILE_TRIGGERS:
            return None  # a broken save changes nothing on any server
        if self.gate is not None and not await self.gate():
            return None  # a standby: the leader reconciles
        reason = ", ".join(sorted(reasons))
        self.activity.begin(reason)
        self.pass_revision = self.revision
        assert self.revision is not None
        sha = self.revision.sha256
        self._newer = asyncio.Event()
        targets = list(self.factory(state))
        if self.wrap:
            targets = list(self.wrap(targets))
        suspended = state.reconcile.suspend
        report = await run_pass(state, targets, on_plan=lambda p: self.activity.planned(p, suspended=suspended),
                                progress=self.activity.progress(LogProgress()),
                                on_result=self.activity.on_result(_log_result), stop=self._newer,
                                abandon=_abandonable(targets), hold=lambda c: self.retries.held(c, sha))
        plan = report.plan
        if not state.reconcile.suspend:
            for result in report.results:
                self.retries.record(result, sha)
            self.retries.keep_only(plan.changes, {t.name for t in targets} - {p.target for p in plan.problems})
        self._record(report, targets, reason, suspended=state.reconcile.suspend)
        if self.last_pass and self.last_pass["ok"] and not state.reconcile.suspend:
            self.applied_revision = sha
        failing = self.verified is not None and not self.verified["ok"]   # checked again until it passes
        if state.reconcile.verify and (failing or _changed_what_people_see(report)) and self._verifying is None:
            self._verifying = asyncio.create_task(self._verify(state))   # after the pass, never in it
        return report

    async def _verify(self, state: DesiredState) -> None:
        """`ollafleet verify`'s listing part, as an employee: shown on /status, logged as warnings."""
        from reconciler.verify import verify

        try:
            v = await verify(state, timeout=30.0, balancer_url=_own_balancer(state, self.balancer_port))
            self.verified = {"at": time.time(), "ok": not v.problems, "problems": v.problems, "checked": v.checked}
        except Exception as exc:      # a bug in the check must not stop the daemon
            self.verified = {"at": time.time(), "ok": False, "problems": [f"verify failed: {exc}"], "checked": []}
        finally:
            self._verifying = None
        for problem in self.verified["problems"]:
            log.warning("verify: %s", problem)

    def _record(self, report: PassReport, targets: Sequence[AnyTarget], reason: str, *, suspended: bool) -> None:
        plan: Plan = report.plan
        now = time.time()
        records = {t.name: TargetRecord(last_pass=now, pass_started=report.started or now) for t in targets}
        for problem in plan.problems:
            records[problem.target].errors.append(problem.message)
        for note in plan.notes:
            records[note.target].notes.append(note.message)
        if suspended:
            for change in plan.changes:
                records[change.target].drift.append(render.change_text(change))
        preempted = held = 0
        for result in report.results:
            rec = records[result.change.target]
            if result.status is Status.APPLIED:
                rec.applied += 1
            elif result.status is Status.HELD:
                held += 1
                rec.errors.append(f"{result.change.path_text}: {result.message}")
                rec.drift.append(result.change.path_text)
            elif result.message in (engine.PREEMPTED, engine.ABANDONED):
                preempted += 1
                rec.drift.append(result.change.path_text)
            else:
                rec.failed += 1
                rec.errors.append(f"{result.change.path_text}: {result.message}")
                rec.drift.append(result.change.path_text)
        for rec in records.values():
            rec.ok = not rec.errors
        self.targets = records
        self.pass_error = None
        self._problems = bool(plan.problems)
        ok = not plan.problems and not any(r.errors for r in records.values())
        self.counters.passes += 1
        self.counters.failed_passes += 0 if ok else 1
        self.counters.changes_applied += sum(r.applied for r in records.values())
        self.counters.changes_failed += sum(r.failed for r in records.values())
        self.last_pass = {"reason": reason, "started": report.started, "finished": report.finished, "ok": ok,
                          "suspended": suspended, "changes": len(plan.changes),
                          "applied": sum(r.applied for r in records.values()),
                          "failed": sum(r.failed for r in records.values()), "preempted": preempted,
                          "held": held}
        self.history.append({**self.last_pass, "changed": [f"{r.change.target}: {render.change_text(r.change)}"
                                                          for r in report.results if r.status is Status.APPLIED],
                             "errors": [f"{n}: {e}" for n, rec in records.items() for e in rec.errors]})
        verb = "found" if suspended else "applied"
        log.info("pass (%s) %s: %d change(s) %s, %d failed, %d held for a later retry, %d target error(s)",
                 reason, "ok" if ok else "FAILED", len(plan.changes) if suspended else self.last_pass["applied"],
                 verb, self.last_pass["failed"], held, len(plan.problems))
        if preempted:
            log.info("pass (%s) made way for a newer file: %d change(s) not started or abandoned", reason, preempted)
        for problem in plan.problems:
            log.warning("%s: %s", problem.target, problem.message)
        if not ok:
            self.on_pass_failed()

    def retry_in(self, interval: float) -> float:
        """Seconds until the retry after a failed pass: `interval`, or longer when the only
        failures are items held until a later time (retrying sooner would change nothing)."""
        due = self.retries.next_due()
        if due is None or self._problems or self.pass_error:
            return interval
        return max(interval, due - self.retries.clock())

    async def wait_for_pass(self, timeout: float) -> None:
        async with self.pass_done:
            await asyncio.wait_for(self.pass_done.wait(), timeout)


def _own_balancer(state: DesiredState, port: int | None) -> str | None:
    """This daemon's balancer as the file names it, on the port it bound (the file may say :0);
    None when the file names a public_url (what people use is checked then)."""
    if state.balancer.public_url or port is None:
        return None
    return f"{state.balancer_public_url().rpartition(':')[0]}:{port}"


def _changed_what_people_see(report: PassReport) -> bool:
    """A change applied to Open WebUI or to a node's models."""
    return any(r.status is Status.APPLIED and (r.change.target == "openwebui" or r.change.path[:1] == ("models",))
               for r in report.results)


def _abandonable(targets: Sequence[AnyTarget]) -> Callable[[Change[object]], bool]:
    """Which changes under way a newer file cuts off: each target says (a pull resumes later)."""
    by_name = {t.name: t for t in targets}
    return lambda change: change.target in by_name and by_name[change.target].abandonable(change)


def _log_result(result: ChangeResult) -> None:
    level = {Status.APPLIED: logging.INFO, Status.HELD: logging.DEBUG}.get(result.status, logging.WARNING)
    log.log(level, "%s %s %s %s%s", result.status.value, result.change.target, result.change.action.value,
            result.change.path_text, f": {result.message}" if result.message else "")

