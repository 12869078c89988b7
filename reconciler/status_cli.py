"""`ollafleet status`: the daemon's /status as tables."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"


def print_status(data: dict[str, Any], console: Console) -> None:
    rev = data.get("revision") or {}
    commit = rev.get("git_commit")
    console.print(f"[bold]File[/] {rev.get('path', '?')}  sha256 {str(rev.get('sha256', ''))[:12]}"
                  + (f"  commit {commit[:10]}{' (modified)' if rev.get('git_dirty') else ''}" if commit else ""))
    for line in data.get("file_errors") or []:
        console.print(f"[red]file rejected[/] {line}")
    last = data.get("last_pass") or {}
    state = "[green]ok[/]" if last.get("ok") else "[red]failed[/]" if last else "not run yet"
    console.print(f"[bold]Last pass[/] {_when(last.get('finished'))} ({last.get('reason', '-')}): {state}, "
                  f"{last.get('applied', 0)} applied, {last.get('failed', 0)} failed"
                  + ("  [yellow](suspended: changes are only reported)[/]" if data.get("suspended") else ""))

    targets = Table("target", "result", "applied", "failed", "pending drift / errors", title="Targets")
    for name, rec in (data.get("targets") or {}).items():
        detail = "; ".join([*rec.get("errors", []), *rec.get("drift", [])]) or "-"
        targets.add_row(name, "[green]ok[/]" if rec.get("ok") else "[red]error[/]", str(rec.get("applied", 0)),
                        str(rec.get("failed", 0)), detail)
    console.print(targets)

    bal = data.get("balancer")
    if bal:
        nodes = Table("node", "state", "in flight", "models", "loaded", title=f"Balancer {bal.get('url', '')}")
        for n in bal.get("nodes", []):
            colour = "green" if n.get("reliability") == "Reliable" else "red"
            reach = "" if n.get("reachable") is not False else " (unreachable)"
            nodes.add_row(n["name"], f"[{colour}]{n.get('reliability')}[/]{reach}",
                          f"{n.get('in_flight', 0)}/{n.get('max_concurrent', 1)}",
                          ", ".join(n.get("models") or []) or "-", ", ".join(n.get("loaded") or []) or "-")
        console.print(nodes)
        m = bal.get("metrics", {})
        console.print(f"requests {m.get('requests_total', 0)}, failures {m.get('failures_total', 0)}, "
                      f"in flight {m.get('in_flight', 0)}, queued {m.get('queued', 0)}")


def main(url: str, as_json: bool) -> int:
    try:
        response = httpx.get(url.rstrip("/") + "/status", timeout=5, trust_env=False)  # never via a proxy
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"cannot read {url}/status: {exc} (is `ollafleet daemon` running?)", file=sys.stderr)
        return 1
    data = response.json()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print_status(data, Console(highlight=False))
    ok = not data.get("errors") and (data.get("last_pass") or {}).get("ok", False)
    return 0 if ok else 1
