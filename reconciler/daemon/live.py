"""What a new file changes in a running daemon: everything applies live except the two
addresses it listens on, which need a restart (the daemon says so in the log and /status)."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.config import DesiredState

# (where in the file, how to read it): settings a running daemon cannot apply
RESTART_ONLY: tuple[tuple[str, Callable[[DesiredState], str]], ...] = (
    ("balancer.listen", lambda s: s.balancer.listen),
    ("reconcile.status_listen", lambda s: s.reconcile.status_listen))


def needs_restart(running: DesiredState, new: DesiredState) -> list[str]:
    """One sentence per setting that differs from what the daemon started with."""
    out = []
    for key, read in RESTART_ONLY:
        before, after = read(running), read(new)
        if before != after:
            out.append(f"{key} changed from {before} to {after}: needs a restart of the daemon "
                       f"(still listening on {before})")
    return out
