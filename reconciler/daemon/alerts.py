"""Alerts from `[alerts]`: a webhook (JSON {"text": ...}) and/or a command, when something stays
wrong, and once when it recovers.

The alerter only looks at the daemon's state (the same data as /status) once a second: it
never runs inside a pass, so a slow webhook cannot delay one. Each condition has a key; an
alert is sent once per key until that key clears, then one "recovered". Conditions:
- a node the balancer cannot reach, for `after`;
- a target whose last passes failed (drift that cannot be corrected, a server that cannot be
  read), for `after`; not for a node the balancer finds unreachable, nor for one that came back
  after that pass began (its errors are from the outage, and the next pass will tell);
- a pass that raised (a bug), for `after`;
- with [cluster], Redis unreachable from this daemon (for its lease or its balancer), for `after`;
- with [reconcile] verify, a verify that found problems (what an employee sees differs from the
  file), for `after`: a check right after a pass can catch Open WebUI or the balancer before
  they caught up, and the daemon checks again after each later pass until it passes; the alert
  names the problems, and "recovered" follows the first verify that passes;
- a rejected save of the file, at once.

Each channel (webhook, command) has its own queue and delivers on its own: a webhook that
hangs or trickles cannot hold the command's alerts. Every attempt has a total deadline
(`deadline`, 30 s: connect, send and answer together), then it counts as failed and is retried
with backoff, in order within its channel.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from balancer import Balancer
from reconciler.config.schema import Alerts
from reconciler.daemon.loop import Daemon
from reconciler.scrub import cut

log = logging.getLogger("ollafleet.alerts")


WAYS = ("webhook", "command")


class _Channel:
    """One way of delivering: its queue of (number, text) and whether its last attempt failed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.failing = False
        self.busy = False       # an alert taken from the queue, not delivered yet


@dataclass
class _Open:
    text: str
    since: float            # clock() when first seen
    wall: float             # time.time() then, for the message
    delay: float
    sent: bool = False


class Alerter:
    def __init__(self, daemon: Daemon, balancer: Balancer | None = None, *,
                 clock: Callable[[], float] = time.monotonic, retry_delay: float = 5.0,
                 deadline: float = 30.0) -> None:
        self.daemon, self.balancer = daemon, balancer
        self.clock = clock
        self.retry_delay = retry_delay
        self.deadline = deadline                   # seconds per delivery attempt, all in
        self.config: Alerts | None = None
        self.open: dict[str, _Open] = {}
        self.sent_at: deque[float] = deque()       # clock() of recent sends, for the rate limit
        self.suppressed = 0
        self.channels = {way: _Channel() for way in WAYS}
        self.delivered: deque[str] = deque(maxlen=50)   # what went out (by any channel), newest last
        self._recorded: deque[int] = deque(maxlen=200)  # numbers of the alerts in `delivered`
        self._number = 0
        self._host = socket.gethostname()
        self._down: set[str] = set()               # nodes unreachable at the last look
        self._back: dict[str, float] = {}          # node -> time.time() it was seen reachable again

    def configure(self, config: Alerts | None) -> None:
        self.config = config

    @property
    def failing(self) -> bool:
        """Some channel's last delivery attempt failed."""
        return any(c.failing for c in self.channels.values())

    def queued(self) -> int:
        """Deliveries waiting, one per channel and alert (the one under way included)."""
        return sum(c.queue.qsize() + (1 if c.busy else 0) for c in self.channels.values())

    def view(self) -> dict[str, Any]:
        """For /status and the page."""
        return {"configured": self.ways(), "open": [c.text for c in self.open.values() if c.sent],
                "watching": [c.text for c in self.open.values() if not c.sent],
                "undelivered": self.queued(), "delivery_failing": self.failing,
                "failing_channels": [w for w, c in self.channels.items() if c.failing],
                "last_sent": list(self.delivered)[-5:]}

    # -- deciding ------------------------------------------------------------------------
    def conditions(self) -> dict[str, tuple[str, float]]:
        """key -> (what is wrong, how long it must last before an alert)."""
        after = self.config.after if self.config else 0.0
        found: dict[str, tuple[str, float]] = {}
        d = self.daemon
        if d.file_errors:
            found["file"] = (f"the file {d.path} was rejected, the last good version stays in force: "
                             + "; ".join(d.file_errors[:3]), 0.0)
        if d.pass_error:
            found["pass"] = (f"a reconcile pass failed unexpectedly: {d.pass_error}", after)
        down: set[str] = set()
        for node in self.balancer.states() if self.balancer else []:
            if node.reachable is False:
                down.add(node.name)
                found[f"node:{node.name}"] = (f"node {node.name} is unreachable ({node.last_error or 'no answer'})",
                                              after)
        now = time.time()
        for name in self._down - down:
            self._back[name] = now
        self._down = down
        redis = _redis_down(d.cluster_status() if d.cluster_status else None)
        if redis is not None:
            found["cluster:redis"] = (redis, after)
        verified = d.verified
        if verified and not verified.get("ok"):
            problems = [str(p) for p in verified.get("problems") or []]
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            found["verify"] = (f"verify: employees do not get what the file declares, {len(problems)} problem(s): "
                               + "; ".join(problems[:3]) + more, after)
        for name, rec in d.targets.items():
            node_name = name.removeprefix("ollama/")
            stale = rec.pass_started < self._back.get(node_name, 0.0) if name != node_name else False
            if rec.errors and node_name not in down and not stale:
                what = "cannot correct drift on" if rec.failed else "cannot reconcile"
                found[f"target:{name}"] = (f"{what} {name}: " + "; ".join(rec.errors[:3]), after)
        return found

    def evaluate(self) -> None:
        """Compare what is wrong now with what was; queue the alerts and recoveries due."""
        if self.config is None:
            self.open.clear()
            return
        now = self.clock()
        current = self.conditions()
        for key in list(self.open):
            if key not in current:
                gone = self.open.pop(key)
                if gone.sent:
                    self._send(f"recovered: {gone.text}")
        for key, (text, delay) in current.items():
            cond = self.open.get(key)
            if cond is None:
                cond = self.open[key] = _Open(text, now, time.time(), delay)
            cond.text = text
            if not cond.sent and now - cond.since >= cond.delay:
                cond.sent = True
                since = datetime.fromtimestamp(cond.wall).strftime("%H:%M:%S")
                self._send(f"{text}" + (f" (since {since})" if cond.delay else ""))

    def _send(self, text: str) -> None:
        assert self.config is not None
        now = self.clock()
        while self.sent_at and now - self.sent_at[0] >= 3600:
            self.sent_at.popleft()
        if len(self.sent_at) >= self.config.max_per_hour:
            self.suppressed += 1
            log.warning("alert not sent (more than %d in an hour): %s", self.config.max_per_hour, text)
            return
        if self.suppressed:
            text += f" ({self.suppressed} earlier alert(s) were not sent: rate limit)"
            self.suppressed = 0
        self.sent_at.append(now)
        log.warning("alert: %s", text)
        self._number += 1
        for way in self.ways():
            self.channels[way].queue.put_nowait((self._number, f"[ollafleet on {self._host}] {text}"))

    # -- delivering ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        senders = [asyncio.create_task(self._deliver_forever(way)) for way in WAYS]
        try:
            while not stop.is_set():
                try:
                    self.evaluate()
                except Exception:   # a bug here must not end alerting, nor the daemon
                    log.exception("alert check failed")
                try:
                    await asyncio.wait_for(stop.wait(), every)
                except asyncio.TimeoutError:
                    pass
        finally:
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    async def _deliver_forever(self, way: str) -> None:
        channel = self.channels[way]
        while True:
            number, text = await channel.queue.get()
            channel.busy = True
            delay = self.retry_delay
            while not await self.deliver(way, text):
                channel.failing = True
                await asyncio.sleep(delay)     # in order: this channel's later alerts wait for this one
                delay = min(delay * 2, 300.0)
            channel.failing = channel.busy = False
            if number not in self._recorded:
                self._recorded.append(number)
                self.delivered.append(text)

    def ways(self) -> list[str]:
        config = self.config
        if config is None:
            return []
        return (["webhook"] if config.webhook is not None else []) + (["command"] if config.command else [])

    async def deliver(self, way: str, text: str) -> bool:
        """Send one alert by `way` within the deadline; False when it failed (logged), to retry.
        A way no longer configured counts as done."""
        config = self.config
        if way == "webhook" and config is not None and config.webhook is not None:
            what, job = f"webhook {config.webhook}", self._post(config.webhook.value, text)
        elif way == "command" and config is not None and config.command:
            what, job = f"command {config.command[0]}", _run(config.command, text)
        else:
            return True
        return await _attempt(what, job, self.deadline)

    @staticmethod
    async def _post(url: str, text: str) -> None:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            response = await client.post(url, json={"text": text})
        if response.status_code >= 300:
            raise RuntimeError(f"answered HTTP {response.status_code}")


def _redis_down(cluster: dict[str, Any] | None) -> str | None:
    """What to say when this daemon cannot reach Redis (the lease's or the balancer's view)."""
    if not cluster:
        return None
    shared = cluster.get("balancer") or {}
    if cluster.get("redis") != "down" and shared.get("redis") != "down":
        return None
    error = cluster.get("redis_error") or shared.get("redis_error") or "no answer"
    return (f"daemon {cluster.get('name')} cannot reach Redis ({error}): no pass applies until it returns; "
            "its balancer serves on its own knowledge")


async def _run(command: list[str], text: str) -> None:
    proc = await asyncio.create_subprocess_exec(*command, text, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await proc.communicate()
    except BaseException:      # the attempt's deadline, or the daemon stopping: no command left behind
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode:
        raise RuntimeError(f"exit code {proc.returncode}: {cut(err.decode(errors='replace').strip(), 200)}")


async def _attempt(what: str, job: Awaitable[Any], deadline: float) -> bool:
    try:
        await asyncio.wait_for(job, deadline)
        return True
    except Exception as exc:
        # the webhook URL holds a secret: only the ${VARIABLE} name is ever logged
        reason = (f"not done within {deadline:g} s" if isinstance(exc, asyncio.TimeoutError)
                  else f"no connection or no answer: {type(exc).__name__}" if isinstance(exc, httpx.TransportError)
                  else str(exc) or type(exc).__name__)
        log.warning("alert not delivered by %s (%s); retrying", what, reason)
        return False
