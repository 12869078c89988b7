"""[cluster]: several daemons on one Redis; every balancer serves, one daemon reconciles.

The leader holds a lease: one Redis key set with NX and an expiry of 3/4 of `lease` (default
15 s), renewed every lease / 4 while it lives. The others stand by (their balancers serve) and
try to take the key every lease / 8, so one of them leads within the lease time after the
leader died. Before each change the leader checks that the key still holds its token and
that its own clock says the lease has not run out (a fencing check): a leader that was paused
(SIGSTOP, a frozen VM) wakes up, fails that check and applies nothing. Redis down: nobody can
hold the lease, so no pass applies until it returns; the balancers keep serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from balancer.fleet import Fleet
from balancer.shared import Shared
from reconciler.config.checks import endpoint
from reconciler.config.schema import Cluster
from reconciler.daemon.loop import Daemon
from reconciler.errors import OllafleetError, TargetError
from reconciler.plan.changes import Change
from reconciler.targets.base import AnyTarget, Progress, Seen, Target, Work, Wrapper

log = logging.getLogger("ollafleet.cluster")

LEADER = "leader"   # the lease's key, after the fleet's prefix: ollafleet:<fleet>:leader
TIMEOUT = 0.5  # seconds: every Redis call; a dead Redis must not stall a request
SAFETY = 0.2  # the share of the lease we never count on (clock drift, the renewal's trip)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(cfg: Cluster) -> Any:
    """A redis.asyncio client; the library is imported only when [cluster] is in the file."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("[cluster] needs the redis package: pip install redis") from exc
    return aioredis.Redis.from_url(
        cfg.redis, password=cfg.password.value if cfg.password else None,
        socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry_on_timeout=False)


def daemon_name(cfg: Cluster) -> str:
    return cfg.name or socket.gethostname()


def nodes_mark(urls: Sequence[str]) -> str:
    """8 hex digits naming a set of node addresses, however each is spelled."""
    text = "\n".join(sorted({"|".join(map(str, endpoint(u))) for u in urls}))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Lease:
    def __init__(self, client: Any, name: str, seconds: float,
                 on_gained: Callable[[], None] = lambda: None, *, key: str, nodes: str = "") -> None:
        self.client = client
        self.key = key
        self.name = name
        self.seconds = seconds
        # the key lives 3/4 of the lease and standbys try every 1/8: a dead leader is
        # replaced within the lease time
        self.ms = max(1, int(seconds * 750))
        # the last part marks the nodes of this daemon's file: a standby can tell that the
        # leader of "its" fleet serves other nodes (two fleets left with the same fleet name)
        self.nodes = nodes
        self.token = f"{name}/{os.getpid()}/{uuid.uuid4().hex[:8]}/{nodes}"
        self.other_fleet: str | None = None   # the leader's name, when its file has other nodes
        self.on_gained = on_gained
        self.valid_until = 0.0  # monotonic; the lease is ours before this
        self._holding = False  # as of the last hold(): to log changes once
        self.redis_error: str | None = None
        self.redis_down_since: float | None = None
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._task: asyncio.Task[None] | None = None

    @property
    def leader(self) -> bool:
        return time.monotonic() < self.valid_until

    async def hold(self) -> bool:
        """Take or renew the lease; True while it is ours."""
        sent = time.monotonic()
        was = self._holding
        try:
            if was:
                ok = bool(await self._renew(keys=[self.key], args=[self.token, self.ms]))
            else:
                ok = bool(await self.client.set(self.key, self.token, nx=True, px=self.ms))
                if not ok:  # ours already, e.g. a renewal whose answer was lost
                    ok = bool(await self._renew(keys=[self.key], args=[self.token, self.ms]))
                if not ok and self.nodes:
                    self._check_leader(await self.client.get(self.key))
        except Exception as exc:
            self._down(exc)
            self.valid_until = 0.0
            if was:
                self._holding = False
                log.warning("cluster: %s lost the leader lease (Redis unreachable): applying "
                            "nothing", self.name)
            return False
        if self.redis_down_since is not None:
            log.warning("cluster: Redis reachable again")
            self.redis_down_since = self.redis_error = None
        # counted from before the request: the key may have been set any time after that
        self.valid_until = sent + self.ms / 1000 * (1 - SAFETY) if ok else 0.0
        self._holding = ok
        if ok and not was:
            log.warning("cluster: %s is now the leader: reconciling", self.name)
            self.on_gained()
        elif was and not ok:
            log.warning("cluster: %s lost the leader lease: standing by", self.name)
        return ok

    def _check_leader(self, raw: bytes | None) -> None:
        """Say once when the leader's file declares other nodes than ours: most likely two
        fleets that share a Redis and a fleet name (or a change not yet on every daemon)."""
        parts = (raw or b"").decode(errors="replace").split("/")
        other = parts[0] if len(parts) == 4 and parts[3] and parts[3] != self.nodes else None
        if other is not None and other != self.other_fleet:
            log.warning("cluster: the leader of fleet %s, daemon %s, declares other nodes than this file: if "
                        "it is another fleet, give each file its own [cluster] fleet = \"...\" (while a "
                        "changed file reaches the daemons one by one this is expected)", self.key, other)
        self.other_fleet = other

    def _down(self, exc: BaseException) -> None:
        if self.redis_down_since is None:
            self.redis_down_since = time.time()
            self.redis_error = f"{type(exc).__name__}: {exc}"
            log.warning("cluster: Redis unreachable (%s): no pass applies until a lease can be "
                        "held again; the balancer keeps serving", self.redis_error)

    async def still_ours(self) -> bool:
        """The fencing check before a change: our clock and Redis both say we lead."""
        if not self.leader:
            return False
        try:
            return bool(await self.client.get(self.key) == self.token.encode()) and self.leader
        except Exception as exc:
            self._down(exc)
            return False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.hold()
            await asyncio.sleep(self.seconds / (4 if self.leader else 8))

    async def close(self) -> None:
        """Stop renewing and hand the lease over at once (only if it is still ours)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leader:
            try:
                await self._release(keys=[self.key], args=[self.token])
            except Exception:
                pass
        self.valid_until, self._holding = 0.0, False


class Fenced(Wrapper[Seen, Work]):
    """Wraps a target: each change is made only after the fencing check."""

    def __init__(self, inner: Target[Seen, Work], lease: Lease) -> None:
        super().__init__(inner)
        self.lease = lease

    async def apply(self, change: Change[Work], progress: Progress) -> None:
        if not await self.lease.still_ours():
            log.warning("cluster: not applying %s %s: this daemon no longer holds the leader lease",
                        change.target, change.path_text)
            raise TargetError("not applied: this daemon no longer holds the leader lease",
                              target=change.target)
        await self.inner.apply(change, progress)


class ClusterMember:
    """This daemon's part: the lease, the shared balancer state, and what /status shows."""

    def __init__(self, cfg: Cluster, fleet: Fleet, on_gained: Callable[[], None], nodes: str = "") -> None:
        self.cfg = cfg
        self.name = daemon_name(cfg)
        self.redis_url = cfg.redis
        self.client = connect(cfg)
        self.lease = Lease(self.client, self.name, cfg.lease, on_gained, key=cfg.key_prefix + LEADER, nodes=nodes)
        self.shared = Shared(connect(cfg), self.name, fleet, cfg.slot_lease, prefix=cfg.key_prefix)
        fleet.shared = self.shared

    def start(self) -> None:
        self.lease.start()
        self.shared.start()

    async def may_apply(self) -> bool:
        """Before a pass: a standby runs none (its leader does)."""
        return await self.lease.still_ours()

    def fence(self, inner: Callable[[Sequence[AnyTarget]], Sequence[AnyTarget]] | None
              ) -> Callable[[Sequence[AnyTarget]], Sequence[AnyTarget]]:
        """The daemon's target wrapper, with the fencing check outermost."""
        def wrap(targets: Sequence[AnyTarget]) -> list[AnyTarget]:
            return [Fenced(t, self.lease) for t in (inner(targets) if inner else targets)]
        return wrap

    def status(self) -> dict[str, Any]:
        down = self.lease.redis_down_since
        return {"name": self.name, "fleet": self.cfg.fleet_name,
                "role": "leader" if self.lease.leader else "standby",
                "redis": "down" if down is not None else "up", "redis_down_since": down,
                "redis_error": self.lease.redis_error, "balancer": self.shared.status(),
                "leader_with_other_nodes": self.lease.other_fleet}

    async def close(self) -> None:
        await self.lease.close()
        await self.shared.close()
        try:
            await self.client.aclose()
        except Exception:
            pass


def join_cluster(cfg: Cluster, daemon: Daemon, balancer: Any) -> ClusterMember:
    """Hook a daemon and its balancer into the cluster (the caller starts it)."""
    urls = [n.url for n in daemon.state.nodes] if daemon.state is not None else []
    member = ClusterMember(cfg, balancer.fleet, lambda: daemon.request("leader"), nodes_mark(urls))
    daemon.gate = member.may_apply
    daemon.cluster_status = member.status
    log.info("cluster: %s joins fleet %s on %s as a standby until it holds the leader lease",
             member.name, cfg.fleet_name, member.redis_url)
    return member


class NotLeader(OllafleetError):
    """`ollafleet apply` on a cluster whose leader lease another daemon holds."""


@contextlib.asynccontextmanager
async def apply_lease(cfg: Cluster) -> AsyncIterator[Lease]:
    """`ollafleet apply` with [cluster]: hold the leader lease for the run, or refuse."""
    client = connect(cfg)
    lease = Lease(client, f"apply@{socket.gethostname()}", cfg.lease, key=cfg.key_prefix + LEADER)
    try:
        if not await lease.hold():
            if lease.redis_error:
                raise NotLeader(f"cluster.redis: cannot reach {cfg.redis} ({lease.redis_error}): "
                                "nothing applied")
            holder = (await client.get(lease.key) or b"?").decode(errors="replace").split("/")[0]
            raise NotLeader(f"daemon {holder!r} holds the leader lease and reconciles this "
                            "cluster: commit the file and let it apply (or stop the daemons first)")
        lease.start()
        yield lease
    finally:
        await lease.close()
        try:
            await client.aclose()
        except Exception:
            pass
