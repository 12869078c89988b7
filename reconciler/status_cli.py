"""`ollafleet status`: the daemon's /status as tables."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reconciler.daemon.activity import describe

DEADLINE = 5.0   # seconds for the whole answer: a slow or trickling server must not hang `status`


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"


def print_status(data: dict[str, Any], console: Console) -> None:
    rev = data.get("revision") or {}
    commit = rev.get("git_commit")
    console.print(f"[bold]File[/] {rev.get('path', '?')}  sha256 {str(rev.get('sha256', ''))[:12]}"
                  + (f"  commit {commit[:10]}{' (modified)' if rev.get('git_dirty') else ''}" if commit else ""))
    for line in data.get("file_errors") or []:
        console.print(f"[red]file rejected[/] {line}")
    activity = data.get("activity")
    if data.get("pass_running"):
        since = f" since {_when(activity['started'])}" if activity else ""
        what = f" ({activity.get('reason', '-')}): {describe(activity)}" if activity else ""
        console.print(f"[bold yellow]Pass running[/]{since}{what}")
        pending = (activity or {}).get("pending") or []
        for line in pending[:10]:
            console.print(f"  to do: {line}")
        if len(pending) > 10:
            console.print(f"  … and {len(pending) - 10} more")
    last = data.get("last_pass") or {}
    state = "[green]ok[/]" if last.get("ok") else "[red]failed[/]" if last else "not run yet"
    console.print(f"[bold]{'Previous' if data.get('pass_running') else 'Last'} pass[/] {_when(last.get('finished'))} "
                  f"({last.get('reason', '-')}): {state}, "
                  f"{last.get('applied', 0)} applied, {last.get('failed', 0)} failed"
                  + ("  [yellow](suspended: changes are only reported)[/]" if data.get("suspended") else ""))

    verified = data.get("verify")       # [reconcile] verify: what an employee sees
    if verified:
        head = "[green]ok[/]" if verified.get("ok") else "[red]problems[/]"
        console.print(f"[bold]Verify[/] {_when(verified.get('at'))}: {head}  " + "; ".join(verified.get("checked") or []))
        for text in verified.get("problems") or []:
            console.print(f"  [red]{text}[/]")

    alerts = data.get("alerts") or {}
    for text in alerts.get("open") or []:
        console.print(f"[red]alert open[/] {text}")
    if alerts.get("delivery_failing"):
        console.print(f"[red]alerts cannot be delivered[/] ({alerts.get('undelivered')} waiting; see the log)")

    targets = Table("target", "result", "applied", "failed", "pending drift / errors", title="Targets")
    for name, rec in (data.get("targets") or {}).items():
        detail = "; ".join([*rec.get("errors", []), *rec.get("drift", [])]) or "-"
        targets.add_row(name, "[green]ok[/]" if rec.get("ok") else "[red]error[/]", str(rec.get("applied", 0)),
                        str(rec.get("failed", 0)), detail)
    console.print(targets)
    applied, attempted = data.get("applied_revision"), data.get("attempted_revision")
    if attempted and applied != attempted:
        console.print(f"[yellow]file {str(attempted)[:12]} not fully applied yet[/]; last fully applied: "
                      f"{str(applied)[:12] if applied else 'none since the daemon started'}")
    retries = data.get("retries") or []
    if retries:
        held = Table("item", "kind", "failures", "next try", "last error", title="Failed items, retried later")
        for r in retries:
            held.add_row(str(r.get("item")), str(r.get("kind")), str(r.get("failures")), _when(r.get("next_retry")),
                         str(r.get("error")))
        console.print(held)

    _print_cluster(data.get("cluster"), console)

    bal = data.get("balancer")
    if bal:
        nodes = Table("node", "state", "in flight", "queued", "models", "loaded", title=f"Balancer {bal.get('url', '')}")
        for n in bal.get("nodes", []):
            colour = "green" if n.get("reliability") == "Reliable" else "red"
            unfit, error = escape(n.get("unfit") or ""), escape(n.get("last_error") or "")
            # unfit: why the polls keep requests away (it says "unreachable" when it is)
            reach = (f" [red]no requests: it {unfit}[/]" if unfit
                     else " (unreachable)" if n.get("reachable") is False else "")
            if error and error not in unfit:
                reach += f" {error}"
            nodes.add_row(n["name"], f"[{colour}]{n.get('reliability')}[/]{reach}",
                          f"{n.get('in_flight', 0)}/{n.get('max_concurrent', 1)}", str(n.get("queued", 0)),
                          ", ".join(n.get("models") or []) or "-", ", ".join(n.get("loaded") or []) or "-")
        console.print(nodes)
        _print_gpus(bal.get("nodes", []), console)
        m = bal.get("metrics", {})
        console.print(f"requests {m.get('requests_total', 0)}, failures {m.get('failures_total', 0)}, "
                      f"in flight {m.get('in_flight', 0)}, queued {m.get('queued', 0)}")
        t = m.get("tasks") or {}
        if t.get("served_total") or t.get("queued") or t.get("timed_out_total"):
            console.print(f"Open WebUI tasks (of those): queued {t.get('queued', 0)}, served "
                          f"{t.get('served_total', 0)}, timed out {t.get('timed_out_total', 0)}, "
                          f"stopped for people {t.get('preempted_total', 0)}, "
                          f"model loads {t.get('model_loads_caused', 0)}")


def _print_gpus(nodes: list[dict[str, Any]], console: Console) -> None:
    """What the balancer knows of each GPU: the model its runner holds (as the balancer last sent
    it or a poll saw it) with its num_ctx, and the rates learned from the node's answers."""
    table = Table("node", "GPU holds", "learned from its answers", title="GPUs as the balancer knows them")
    for n in nodes:
        gpu = n.get("gpu") or {}   # the poll's num_ctx, else the one the balancer sent (status.gpu_view)
        model, ctx = gpu.get("model", n.get("runner_model")), gpu.get("num_ctx", n.get("runner_num_ctx"))
        holds = f"{model}\nnum_ctx {ctx or 'default'}" if model else "-"
        learned = [f"{m}: load {r.get('load_s')} s, prompt {r.get('prompt_tokens_per_s')} tokens/s, "
                   f"generation {r.get('tokens_per_s')} tokens/s, answers ~{r.get('answer_tokens')} tokens"
                   for m, r in (n.get("learned") or {}).items()]
        table.add_row(escape(n["name"]), escape(holds), escape("\n".join(learned)) or "-")
    console.print(table)


def _print_cluster(cluster: dict[str, Any] | None, console: Console) -> None:
    """[cluster]: this daemon's role and whether it reaches Redis (the lease's and the balancer's view)."""
    if not cluster:
        return
    role = ("[green]leader[/] (this daemon reconciles)" if cluster.get("role") == "leader"
            else "[yellow]standby[/] (it serves as a balancer; the leader reconciles)")
    fleet = f"; fleet {escape(str(cluster['fleet']))}" if cluster.get("fleet") else ""
    console.print(f"[bold]Cluster[/] {escape(str(cluster.get('name', '?')))}: {role}{fleet}")
    shared = cluster.get("balancer") or {}
    if cluster.get("redis") == "down" or shared.get("redis") == "down":
        since = min((t for t in (cluster.get("redis_down_since"), shared.get("redis_down_since")) if t), default=None)
        err = cluster.get("redis_error") or shared.get("redis_error")
        console.print(f"  [red]Redis unreachable[/] since {_when(since)}" + (f" ({escape(err)})" if err else "")
                      + ": no pass applies; the balancer serves on its own knowledge")
    else:
        console.print("  Redis reachable: slots and caches shared with the other balancers")
    if cluster.get("leader_with_other_nodes"):
        console.print(f"  [yellow]the leader, {escape(str(cluster['leader_with_other_nodes']))}, declares other "
                      "nodes[/]: another fleet with the same name? Set [cluster] fleet in each file")


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit 1 here, which reads as "unhealthy"; let main() decide
        self.quiet = True
        raise BrokenPipeError


class NotADaemon(Exception):
    pass


async def fetch(url: str, deadline: float = DEADLINE) -> dict[str, Any]:
    """GET url/status within `deadline` seconds in all (connect, headers and body), and check that
    the answer is a daemon's status. Raises NotADaemon with a one-line reason."""
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(timeout=deadline, trust_env=False) as client:   # never via a proxy
            return await client.get(url.rstrip("/") + "/status")
    try:
        response = await asyncio.wait_for(get(), deadline)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise NotADaemon(f"no complete answer within {deadline:.0f} s") from None
    except httpx.HTTPError as exc:
        raise NotADaemon(str(exc) or type(exc).__name__) from None
    if response.status_code != 200:
        raise NotADaemon(f"answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or "last_pass" not in data:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise NotADaemon(f"the answer ({kind}) is not an ollafleet daemon's status")
    return data


def healthy(data: dict[str, Any]) -> bool:
    """No error, and the last pass (if one ended yet) went through. A daemon whose first pass is
    still running is not unhealthy."""
    last = data.get("last_pass")
    return not data.get("errors") and (last is None or bool(last.get("ok")))


def main(url: str, as_json: bool) -> int:
    try:
        data = asyncio.run(fetch(url))
    except NotADaemon as exc:
        print(f"cannot read {url.rstrip('/')}/status: {exc} (is `ollafleet daemon` running?)", file=sys.stderr)
        return 1
    code = 0 if healthy(data) else 1
    try:
        if as_json:
            print(json.dumps(data, indent=2))
        else:
            print_status(data, _Console(highlight=False))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped early (`| head -1`): not an error, the exit code still says the health.
        # Point stdout at /dev/null so Python's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code
