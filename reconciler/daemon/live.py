"""What a new file changes in a running daemon: everything applies live except the two
addresses it listens on, which need a restart (the daemon says so in the log and /status)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from reconciler.config import DesiredState
from reconciler.config.values import split_listen
from reconciler.plan.changes import TargetProblem

# (where in the file, how to read it): settings a running daemon cannot apply
RESTART_ONLY: tuple[tuple[str, Callable[[DesiredState], str]], ...] = (
    ("balancer.listen", lambda s: s.balancer.listen),
    ("reconcile.status_listen", lambda s: s.reconcile.status_listen))


def listening(state: DesiredState) -> dict[str, str]:
    """The addresses a daemon started from `state` listens on (shown in /status)."""
    return {key: read(state) for key, read in RESTART_ONLY}


def needs_restart(running: DesiredState | dict[str, str], new: DesiredState) -> list[str]:
    """One sentence per setting that differs from what the daemon started with."""
    started = running if isinstance(running, dict) else listening(running)
    out = []
    for key, read in RESTART_ONLY:
        before, after = started.get(key, read(new)), read(new)
        if before != after:
            out.append(f"{key} changed from {before} to {after}: needs a restart of the daemon "
                       f"(still listening on {before})")
    return out


async def restart_notes(state: DesiredState, timeout: float = 0.5) -> list[TargetProblem]:
    """For `plan`: ask the daemon at the file's status address what it listens on, and note each
    address the file changed (only a restart applies it). No daemon there: nothing to say."""
    host, port = split_listen(state.reconcile.status_listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            body: Any = (await client.get(url)).json()
    except (httpx.HTTPError, ValueError):
        return []
    started = body.get("listening") if isinstance(body, dict) else None
    if not isinstance(started, dict):
        return []
    return [TargetProblem("daemon", line) for line in needs_restart(started, state)]
