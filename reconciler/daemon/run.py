"""`ollafleet daemon`: the balancer, the reconcile loop, the file watcher, the schedule, the
status endpoint and the signals, in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchfiles import awatch

from balancer import Balancer, Metrics
from balancer.guard import STATUS_MAX_CONNECTIONS, GuardedAppRunner, GuardedServer
from reconciler.config import DesiredState
from reconciler.cluster import ClusterMember, join_cluster
from reconciler.config.values import split_listen
from reconciler.daemon.alerts import Alerter
from reconciler.daemon.live import listening, needs_restart
from reconciler.daemon.loop import Daemon, TargetFactory
from reconciler.daemon.status import status_app
from reconciler.daemon.timeline import Timeline
from reconciler.daemon.wiring import balancer_nodes, balancer_settings, draining
from reconciler.targets import build_targets

log = logging.getLogger("ollafleet.daemon")
SAMPLE_EVERY = 5.0   # seconds between samples of the queue and the nodes for the status page


async def watch_file(path: Path, daemon: Daemon, stop: asyncio.Event) -> None:
    """Watch the folder, not the file: editors and git replace files by renaming. If watching
    fails (the folder vanished), say so and try again; the interval still applies the file."""
    name = path.name
    while not stop.is_set():
        try:
            async for changes in awatch(path.parent, debounce=300, step=50, stop_event=stop, recursive=False):
                if any(Path(changed).name == name for _, changed in changes):
                    await daemon.file_changed()
        except Exception as exc:
            log.error("cannot watch %s (%s): retrying in 5 s; the interval still applies the file",
                      path.parent, exc)
            try:
                await asyncio.wait_for(stop.wait(), 5)
            except asyncio.TimeoutError:
                pass


async def sample(timeline: Timeline, balancer: Balancer, every: float, stop: asyncio.Event) -> None:
    """Every few seconds: the queue per model and which nodes are down, into the timeline."""
    while not stop.is_set():
        timeline.sample(balancer.queued_by_model(),
                        ((s.name, s.reachable is not False and s.reliability == "Reliable") for s in balancer.states()))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


class Service:
    def __init__(self, path: str | Path, *, factory: TargetFactory = build_targets,
                 drain_timeout: float = 60.0, timeline: Timeline | None = None,
                 sample_every: float = SAMPLE_EVERY) -> None:
        self.path = Path(path)
        self.timeline = timeline or Timeline()   # what the status page draws; emptied by a restart
        self.sample_every = sample_every
        self.daemon = Daemon(self.path, factory=factory)
        self.alerter = Alerter(self.daemon)
        self.drain_timeout = drain_timeout
        self.stop_event = asyncio.Event()
        self.balancer: Balancer | None = None
        self.status_url = ""
        self.scheduler = AsyncIOScheduler()
        self._status_runner: web.AppRunner | None = None
        self._started: DesiredState | None = None   # the file the daemon started with (its addresses)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Task[None] | None = None
        self._forced = False
        self.cluster: ClusterMember | None = None
        self.task_config: dict[str, Any] = {}       # Open WebUI's task settings, as last read

    async def start(self) -> bool:
        if not await self.daemon.reload():
            for line in self.daemon.file_errors:
                print(line, file=sys.stderr)
            return False
        state = self.daemon.state
        assert state is not None
        self.balancer = Balancer(balancer_settings(state), balancer_nodes(state))
        self.alerter.balancer = self.balancer
        self.balancer.metrics.listen(self.timeline.event)
        self.alerter.configure(state.alerts)
        if state.cluster is not None:
            self.cluster = join_cluster(state.cluster, self.daemon, self.balancer)
        host, port = split_listen(state.balancer.listen)
        try:
            await self.balancer.start(host, port)
        except OSError as exc:
            print(f"{self.path}: balancer.listen: cannot listen on {state.balancer.listen}: {exc.strerror}",
                  file=sys.stderr)
            return False
        self._started = state
        self.daemon.listening = listening(state)
        self.daemon.balancer_port = self.balancer.port    # `[reconcile] verify` asks the port bound, even for :0
        log.info("balancer listening on %s", self.balancer.url)
        self.daemon.on_new_state = self._new_state
        self.daemon.wrap = draining(self.balancer, self._task_config)
        if self.cluster is not None:
            self.daemon.wrap = self.cluster.fence(self.daemon.wrap)
        self.daemon.on_pass_failed = self._schedule_retry
        # bounded like the balancer's port: a flood here must not starve the balancer or a pass
        self._status_runner = GuardedAppRunner(
            status_app(self.daemon, self.balancer, self.alerter, self.timeline), metrics=Metrics(),
            max_connections=STATUS_MAX_CONNECTIONS, idle_timeout=state.balancer.idle_timeout)
        await self._status_runner.setup()
        shost, sport = split_listen(state.reconcile.status_listen)
        site = web.TCPSite(self._status_runner, shost, sport, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            print(f"{self.path}: reconcile.status_listen: cannot listen on {state.reconcile.status_listen}: "
                  f"{exc.strerror}", file=sys.stderr)
            await self.stop()
            return False
        bound = self._status_runner.addresses[0]
        self.status_url = f"http://{shost}:{bound[1]}"
        log.info("status on %s/status and %s/metrics", self.status_url, self.status_url)
        self.scheduler.add_job(self._request, "interval", seconds=state.reconcile.interval,
                               args=["interval"], id="interval")
        self.scheduler.start()
        if self.cluster is not None:
            self.cluster.start()
        self._tasks = [asyncio.create_task(self.daemon.run()),
                       asyncio.create_task(watch_file(self.path, self.daemon, self.stop_event)),
                       asyncio.create_task(self.alerter.run(self.stop_event)),
                       asyncio.create_task(sample(self.timeline, self.balancer, self.sample_every, self.stop_event))]
        self.daemon.request("start")
        return True

    def _new_state(self, state: DesiredState) -> None:
        assert self.balancer is not None
        self.balancer.replace_nodes(balancer_nodes(state))
        self.alerter.configure(state.alerts)
        self.balancer.update_settings(balancer_settings(state, self.task_config))
        status = self._status_runner.server if self._status_runner is not None else None
        if isinstance(status, GuardedServer):
            status.use(STATUS_MAX_CONNECTIONS, state.balancer.idle_timeout)
        assert self._started is not None
        restart = needs_restart(self._started, state)
        if restart != self.daemon.needs_restart:
            for line in restart:
                log.warning("%s", line)
        self.daemon.needs_restart = restart
        if state.cluster != (self.cluster.cfg if self.cluster else None):
            log.warning("[cluster] changed: restart the daemon to use the new settings")
        if self.scheduler.running:
            self.scheduler.reschedule_job("interval", trigger="interval", seconds=state.reconcile.interval)

    def _task_config(self, config: dict[str, Any]) -> None:
        """Open WebUI's task settings as a pass read them: its templates tell the balancer its
        task requests."""
        if config == self.task_config or self.daemon.state is None or self.balancer is None:
            return
        self.task_config = config
        self.balancer.update_settings(balancer_settings(self.daemon.state, config))

    def _schedule_retry(self) -> None:
        state = self.daemon.state
        if state is None or not self.scheduler.running:
            return
        when = datetime.now() + timedelta(seconds=self.daemon.retry_in(state.reconcile.retry_interval))
        self.scheduler.add_job(self._request, "date", run_date=when, args=["retry"], id="retry",
                               replace_existing=True)

    async def _request(self, reason: str) -> None:
        # a coroutine, so apscheduler runs it on the loop (a plain function would run in a thread)
        self.daemon.request(reason)

    def _sighup(self) -> None:
        self._tasks.append(asyncio.create_task(self.daemon.file_changed("SIGHUP")))

    async def run(self) -> int:
        if not await self.start():
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_signal)
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
        await self.stop_event.wait()
        self._stopping = asyncio.create_task(self.stop())
        try:
            await self._stopping
        except asyncio.CancelledError:
            if not self._forced:
                raise
            return 130          # forced: open streams were cut
        return 0

    def _stop_signal(self) -> None:
        """The first SIGTERM/Ctrl-C stops gracefully; a second one exits now."""
        if not self.stop_event.is_set():
            self.stop_event.set()
            return
        log.warning("second stop signal: exiting now, open streams are cut")
        self._forced = True
        if self._stopping is not None:
            self._stopping.cancel()

    async def stop(self) -> None:
        """Stop triggers and the pass in progress, let open streams finish, close."""
        log.info("stopping: finishing open streams (up to %.0f s)", self.drain_timeout)
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.lease.close()   # hands the lease over at once
        if self.balancer is not None:
            await self.balancer.stop(drain_timeout=self.drain_timeout)
        if self.cluster is not None:
            await self.cluster.close()
        if self._status_runner is not None:
            await self._status_runner.cleanup()
        log.info("stopped")


def main(path: str, drain_timeout: float = 60.0) -> int:
    from balancer.cli import run as run_loop   # uvloop where available: cheaper streaming

    return run_loop(Service(path, drain_timeout=drain_timeout).run())
