"""What balancers of one cluster share through Redis ([cluster] in the file).

Slots: per node a sorted set of the requests it runs (member: daemon and request, score: the
slot's expiry on Redis's clock). Taking one is a Lua script (drop expired, count, add when
below the node's max), so no two balancers can both fill the last slot. Each daemon renews
its slots every slot_lease / 3; a daemon that dies stops renewing and its slots expire.

Caches: per node a small JSON (the conversation its KV cache holds, the model and num_ctx it
last loaded, the rates learned there), written when a request ends, read before each decision, so a conversation
continued through another balancer still goes to the node that holds its cache.

Drains: while the leader re-creates or deletes a model on a node, every balancer keeps that
model off that node (a hash field per drain, renewed like the slots).

Redis down: every call fails fast (short socket timeouts); the balancer then decides on its
own knowledge, says so once in the log and in /status, and tries Redis again every second.
No request fails because of Redis. Slots taken while it was down are not in Redis: for a
short while after it returns, a node may get more requests than its slots.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from .conversation import Conversation
from .cost import Rates

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger("balancer")

PREFIX = "ollafleet:default:"   # the daemon passes ollafleet:<fleet>: (see [cluster] fleet)
RETRY = 1.0  # seconds between attempts while Redis is down
POLL = 0.25  # seconds between refreshes while requests wait for a slot

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
TAKE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return 1
"""
RENEW = _NOW + """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * tonumber(ARGV[1]))
end
return 1
"""
# KEYS: the slot sets, then the drains hash; returns the live counts, then the live drains
COUNT = _NOW + """
local out = {}
for i = 1, #KEYS - 1 do out[i] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf') end
local drains = redis.call('HGETALL', KEYS[#KEYS])
for i = 1, #drains, 2 do
  if tonumber(drains[i + 1]) <= now then redis.call('HDEL', KEYS[#KEYS], drains[i])
  else out[#out + 1] = drains[i] end
end
return out
"""
DRAIN = _NOW + """
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], now + tonumber(ARGV[1])) end
return 1
"""


def _conv_json(c: Conversation | None) -> Any:
    return None if c is None else [c.key, list(c.messages)]


def _conv(raw: Any) -> Conversation | None:
    if not isinstance(raw, list) or len(raw) != 2:
        return None
    return Conversation(int(raw[0]), tuple(int(m) for m in raw[1]))


def _drains(fields: list[Any], me: str) -> set[tuple[str, str]]:
    out = set()
    for raw in fields:
        who, node, model = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("\n", 2)
        if who != me:
            out.add((node, model))
    return out


class Shared:
    def __init__(self, client: Any, name: str, fleet: Fleet, slot_lease: float = 10.0, *,
                 prefix: str = PREFIX) -> None:
        self.client = client  # redis.asyncio.Redis
        # every key starts with the fleet's prefix: fleets sharing one Redis never meet
        self.slots, self.caches = prefix + "slots:", prefix + "cache:"
        self.drains = prefix + "drains"  # field: daemon, node, model; value: expiry (ms, Redis's clock)
        self.name = name
        # unique even when two daemons were given the same name (or share a host name)
        self.me = f"{name}/{uuid.uuid4().hex[:8]}"
        self.fleet = fleet
        self.lease_ms = max(1, int(slot_lease * 1000))
        self.held: dict[str, set[str]] = {}  # node -> our members in its slot set
        self.members: dict[tuple[str, int], str] = {}  # (node, request) -> its member
        self._seq = itertools.count()  # members are never reused (id() of a request can be)
        self.seen: dict[str, bytes] = {}  # node -> the cache JSON last read
        self.mine: Counter[tuple[str, str]] = Counter()  # (node, model) -> our drains under way
        self.theirs: set[tuple[str, str]] = set()  # drains of other daemons, applied to the fleet
        self.down_since: float | None = None
        self.error: str | None = None
        self._retry_at = 0.0
        self._take = client.register_script(TAKE)
        self._renew = client.register_script(RENEW)
        self._drain = client.register_script(DRAIN)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    # -- health ----------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self.down_since is None

    def _usable(self) -> bool:
        return self.up or time.monotonic() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY
        if self.down_since is None:
            self.down_since = time.time()
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("cluster: Redis unreachable (%s); balancing on this daemon's own "
                        "knowledge until it returns", self.error)
            for node in self.fleet.nodes.values():
                node.remote = 0
            self.held.clear()
            self.members.clear()
            self._apply_drains(set())
            self.fleet.notify()

    def _ok(self) -> None:
        if self.down_since is not None:
            log.warning("cluster: Redis reachable again after %.0f s; sharing slots again",
                        time.time() - self.down_since)
            self.down_since = self.error = None

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "redis": "up" if self.up else "down",
                "redis_down_since": self.down_since, "redis_error": self.error,
                "slots_held": {n: len(m) for n, m in self.held.items() if m}}

    # -- the request path -------------------------------------------------------------
    async def refresh(self) -> None:
        """Read every node's slot count and cache from Redis (one round trip)."""
        if not self._usable():
            return
        names = list(self.fleet.nodes)
        if not names:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.eval(COUNT, len(names) + 1, *[self.slots + n for n in names], self.drains)
                pipe.mget([self.caches + n for n in names])
                counts, caches = await pipe.execute()
        except Exception as exc:  # redis errors, timeouts, closed connections
            self._failed(exc)
            return
        self._ok()
        changed = self._apply_drains(_drains(counts[len(names):], self.me))
        for name, count, raw in zip(names, counts, caches):
            node = self.fleet.nodes.get(name)
            if node is None:
                continue
            remote = max(0, int(count) - len(self.held.get(name, ())))
            if remote != node.remote:
                node.remote, changed = remote, True
            if raw is not None and raw != self.seen.get(name):
                self.seen[name] = raw
                self._adopt(name, json.loads(raw))
                changed = True
        if changed:
            self.fleet.notify()

    def _adopt(self, name: str, data: dict[str, Any]) -> None:
        if data.get("by") == self.me:
            return
        node = self.fleet.nodes[name]
        node.conversation = _conv(data.get("conversation"))
        k = self.fleet.knowledge.node(name)
        if not k.running:
            k.model, k.num_ctx = data.get("model"), data.get("num_ctx")
            k.cached, k.cached_tokens = node.conversation, int(data.get("cached_tokens") or 0)
            k.cached_at = self.fleet.knowledge.now()  # it ended about now, on another balancer
        for model, r in (data.get("rates") or {}).items():
            if isinstance(r, list) and len(r) == 4:  # the latest learner's: one shared average
                k.rates[model] = Rates(*(float(x) for x in r))

    def _apply_drains(self, theirs: set[tuple[str, str]]) -> bool:
        if theirs == self.theirs:
            return False
        for name, model in theirs - self.theirs:
            node = self.fleet.nodes.get(name)
            if node is not None:
                node.draining[model] += 1
        for name, model in self.theirs - theirs:
            node = self.fleet.nodes.get(name)
            if node is not None and node.draining[model] > 1:
                node.draining[model] -= 1
            elif node is not None:
                node.draining.pop(model, None)
        self.theirs = theirs
        self.fleet.notify()
        return True

    def drained(self, name: str, model: str, on: bool) -> None:
        """Our daemon starts or ends a drain: tell the other balancers."""
        key = (name, model)
        if on:
            self.mine[key] += 1
            if self.mine[key] == 1 and self._usable():
                self._spawn(self._write_drains([key]))
        elif self.mine[key] > 1:
            self.mine[key] -= 1
        else:
            self.mine.pop(key, None)
            if self._usable():
                self._spawn(self._forget_drain(key))

    async def _write_drains(self, keys: list[tuple[str, str]]) -> None:
        try:
            await self._drain(keys=[self.drains], args=[self.lease_ms] + [
                f"{self.me}\n{n}\n{m}" for n, m in keys])
        except Exception as exc:
            self._failed(exc)

    async def _forget_drain(self, key: tuple[str, str]) -> None:
        try:
            await self.client.hdel(self.drains, f"{self.me}\n{key[0]}\n{key[1]}")
        except Exception as exc:
            self._failed(exc)

    async def take(self, name: str, key: int) -> bool:
        """Take one of the node's slots for request `key`; False when the cluster has it full.
        True without Redis: then this daemon's own count is all there is."""
        node = self.fleet.nodes.get(name)
        if node is None or not self._usable():
            return True
        member = f"{self.me}/{next(self._seq)}"
        try:
            got = await self._take(keys=[self.slots + name],
                                   args=[node.spec.max_concurrent, self.lease_ms, member])
        except Exception as exc:
            self._failed(exc)
            return True
        self._ok()
        if got:
            self.held.setdefault(name, set()).add(member)
            self.members[(name, key)] = member
            return True
        # full elsewhere: look busy to decide() until a refresh says otherwise
        node.remote = max(node.remote, node.spec.max_concurrent - node.in_flight)
        return False

    def release(self, name: str, key: int) -> None:
        """The request ended: free its slot and tell the others what the node's cache holds."""
        member = self.members.pop((name, key), None)
        mine = self.held.get(name)
        if member is None or mine is None or member not in mine:
            return
        mine.discard(member)
        node = self.fleet.nodes.get(name)
        k = self.fleet.knowledge.node(name)
        cache = json.dumps({"by": self.me, "conversation": _conv_json(
            node.conversation if node else None), "model": k.model, "num_ctx": k.num_ctx,
            "cached_tokens": k.cached_tokens, "rates": {
                m: [r.load, r.prefill, r.gen, r.answer] for m, r in k.rates.items()}})
        self._spawn(self._release(name, member, cache))

    async def _release(self, name: str, member: str, cache: str) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zrem(self.slots + name, member)
                pipe.set(self.caches + name, cache)
                await pipe.execute()
        except Exception as exc:
            self._failed(exc)
            return
        self.seen[name] = cache.encode()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- background --------------------------------------------------------------------
    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Renew our slots; refresh counts often while requests wait, else now and then."""
        renewed = 0.0
        while True:
            now = time.monotonic()
            try:
                if self._usable() and now - renewed >= self.lease_ms / 3000:
                    renewed = now
                    await self._renew_all()
                if self.fleet.metrics.queued or not self.up:
                    await self.refresh()
            except Exception:  # a bug here must not end the renewals for good
                log.exception("cluster: shared state loop")
            await asyncio.sleep(POLL)

    async def _renew_all(self) -> None:
        if self.mine:
            await self._write_drains(list(self.mine))
        pairs = [(n, m) for n, members in self.held.items() for m in members]
        if not pairs:
            return
        try:
            await self._renew(keys=[self.slots + n for n, _ in pairs],
                              args=[self.lease_ms] + [m for _, m in pairs])
        except Exception as exc:
            self._failed(exc)

    async def close(self) -> None:
        tasks = list(self._tasks) + ([self._loop] if self._loop else [])
        if self._loop is not None:
            self._loop.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.client.aclose()
        except Exception:
            pass
