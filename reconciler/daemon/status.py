"""/ (an HTML page), /status (JSON) and /metrics (Prometheus text) on the admin address, 127.0.0.1 by default."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    Metric)

from balancer import Balancer
from reconciler.daemon import page
from reconciler.daemon.alerts import Alerter
from reconciler.daemon.loop import Daemon
from reconciler.daemon.timeline import Timeline
from reconciler.scrub import scrub_data


def status_json(daemon: Daemon, balancer: Balancer | None, alerter: Alerter | None = None,
                timeline: Timeline | None = None) -> dict[str, Any]:
    pending = [f"{name}: {d}" for name, rec in daemon.targets.items() for d in rec.drift]
    errors = list(daemon.file_errors) + [f"{name}: {e}" for name, rec in daemon.targets.items() for e in rec.errors]
    if daemon.pass_error:
        errors.append(f"the last pass failed unexpectedly: {daemon.pass_error}")
    return _with_timeline({
        "now": time.time(),
        "revision": daemon.revision.to_json() if daemon.revision else None,
        "file_errors": daemon.file_errors,
        "rejected_sha256": _on_disk_sha256(daemon) if daemon.file_errors else None,
        "suspended": bool(daemon.state and daemon.state.reconcile.suspend),
        "pass_running": daemon.running_pass,
        "activity": daemon.activity.current,
        "newer_file_waiting": daemon.file_waiting,
        "last_pass": daemon.last_pass,
        "applied_revision": daemon.applied_revision,
        "attempted_revision": daemon.pass_revision.sha256 if daemon.pass_revision else None,
        "retries": daemon.retries.to_json(),
        "history": list(daemon.history),
        "targets": {name: dataclasses.asdict(rec) for name, rec in daemon.targets.items()},
        "pending_drift": pending,
        "errors": errors,
        "needs_restart": daemon.needs_restart,
        "listening": daemon.listening,
        "counters": dataclasses.asdict(daemon.counters),
        "alerts": alerter.view() if alerter else None,
        "verify": daemon.verified,        # [reconcile] verify: what an employee sees, after the last pass that changed it
        "cluster": daemon.cluster_status() if daemon.cluster_status else None,
        "balancer": None if balancer is None else {
            "url": balancer.url,
            # the file's [balancer] in force, as the file writes it (ollafleet import --daemon reads it)
            "settings": daemon.state.balancer.model_dump(mode="json", exclude_none=True) if daemon.state else None,
            "nodes": [_node_json(daemon, s) for s in balancer.states()],
            "metrics": balancer.metrics.as_dict(),
        },
    }, balancer, timeline)


def _with_timeline(data: dict[str, Any], balancer: Balancer | None, timeline: Timeline | None) -> dict[str, Any]:
    """The history the page draws (`over_time`), and per node what its GPU holds with which
    num_ctx (`gpu`): the poll's context_length, else what the balancer itself sent."""
    data["over_time"] = timeline.to_json() if timeline is not None else None
    if balancer is not None and data.get("balancer"):
        polled = balancer.polled_contexts()
        for node in data["balancer"]["nodes"]:
            node["gpu"] = gpu_view(node, polled.get(node.get("name"), {}))
    return data


def gpu_view(node: dict[str, Any], polled: dict[str, int]) -> dict[str, Any]:
    loaded = list(node.get("loaded") or [])
    model = node.get("runner_model")
    if loaded and model not in loaded:
        model = loaded[0]   # polled, never sent (or the one sent was evicted since)
    ctx, source = polled.get(model or ""), "poll"
    if ctx is None and model is not None and model == node.get("runner_model") and node.get("runner_num_ctx"):
        ctx, source = node.get("runner_num_ctx"), "sent"
    return {"model": model, "num_ctx": ctx, "num_ctx_from": source if ctx else None,
            "also_loaded": [m for m in loaded if m != model]}


def _on_disk_sha256(daemon: Daemon) -> str | None:
    """The sha256 of the rejected file on disk (the last attempted revision)."""
    try:
        return hashlib.sha256(daemon.path.read_bytes()).hexdigest()
    except OSError:
        return None


def _node_json(daemon: Daemon, state: Any) -> dict[str, Any]:
    """A node as the balancer sees it, plus the models the file declares for it. An error is
    shown only while the node is unhealthy: once it answers again, the old error is history."""
    data = dataclasses.asdict(state)
    if data.get("reachable") is not False and data.get("reliability") == "Reliable":
        data["last_error"] = None
    node = next((n for n in daemon.state.nodes if n.name == state.name), None) if daemon.state else None
    data["declared"] = None if node is None or daemon.state is None else daemon.state.models_on(node)
    return data


class _Collector:
    def __init__(self, daemon: Daemon, balancer: Balancer | None) -> None:
        self.daemon, self.balancer = daemon, balancer

    def collect(self) -> Iterator[Metric]:
        c = self.daemon.counters
        yield CounterMetricFamily("ollafleet_reconcile_passes", "Reconcile passes run", value=c.passes)
        yield CounterMetricFamily("ollafleet_reconcile_failed_passes", "Passes with an error", value=c.failed_passes)
        changes = CounterMetricFamily("ollafleet_reconcile_changes", "Changes applied or failed", labels=["result"])
        changes.add_metric(["applied"], c.changes_applied)
        changes.add_metric(["failed"], c.changes_failed)
        yield changes
        yield GaugeMetricFamily("ollafleet_file_valid", "1 when the file in force is the file on disk",
                                value=0 if self.daemon.file_errors else 1)
        drift = GaugeMetricFamily("ollafleet_pending_drift", "Changes not yet made, per target", labels=["target"])
        for name, rec in self.daemon.targets.items():
            drift.add_metric([name], len(rec.drift))
        yield drift
        cluster = self.daemon.cluster_status() if self.daemon.cluster_status else None
        if cluster is not None:
            yield GaugeMetricFamily("ollafleet_cluster_leader", "1 while this daemon holds the leader lease",
                                    value=1 if cluster["role"] == "leader" else 0)
            yield GaugeMetricFamily("ollafleet_cluster_redis_up", "1 while Redis is reachable",
                                    value=1 if cluster["redis"] == "up" else 0)
        if self.balancer is None:
            return
        m = self.balancer.metrics
        yield CounterMetricFamily("ollafleet_balancer_requests", "Requests received", value=m.requests_total)
        yield CounterMetricFamily("ollafleet_balancer_failures", "Requests a node failed", value=m.failures_total)
        yield CounterMetricFamily("ollafleet_balancer_rejected", "Requests answered 4xx/503 by the balancer",
                                  value=m.rejected_total)
        yield GaugeMetricFamily("ollafleet_balancer_in_flight", "Requests being served", value=m.in_flight)
        yield GaugeMetricFamily("ollafleet_balancer_queued", "Requests waiting for a free node", value=m.queued)
        yield GaugeMetricFamily("ollafleet_balancer_connections", "Open client connections",
                                value=m.connections_open)
        yield CounterMetricFamily("ollafleet_balancer_connections_refused",
                                  "Client connections refused (or idle ones closed) at max_connections",
                                  value=m.connections_refused_total)
        yield CounterMetricFamily("ollafleet_balancer_connections_timed_out",
                                  "Client connections closed without a complete request within idle_timeout",
                                  value=m.connections_timed_out_total)
        per_node = GaugeMetricFamily("ollafleet_node_in_flight", "Requests being served per node", labels=["node"])
        reliable = GaugeMetricFamily("ollafleet_node_reliable", "1 when the node is Reliable", labels=["node"])
        for s in self.balancer.states():
            per_node.add_metric([s.name], s.in_flight)
            reliable.add_metric([s.name], 1 if s.reliability == "Reliable" else 0)
        yield per_node
        yield reliable
        yield CounterMetricFamily("ollafleet_balancer_model_loads", "Requests sent where a model (re)load was expected",
                                  value=m.model_loads_caused)
        t = m.tasks      # Open WebUI's background task requests, a share of the counts above
        yield GaugeMetricFamily("ollafleet_balancer_task_queued", "Open WebUI task requests waiting behind people",
                                value=t.queued)
        yield CounterMetricFamily("ollafleet_balancer_task_served", "Open WebUI task requests sent to a node",
                                  value=t.served_total)
        yield CounterMetricFamily("ollafleet_balancer_task_timed_out",
                                  "Open WebUI task requests answered 503 after task_timeout", value=t.timed_out_total)
        yield CounterMetricFamily("ollafleet_balancer_task_model_loads",
                                  "Open WebUI task requests sent to a node that did not hold the task model",
                                  value=t.model_loads_caused)
        yield CounterMetricFamily("ollafleet_balancer_warmer_loads",
                                  "Model loads the balancer's warmer started (pins, orphan reloads)",
                                  value=m.warmer_loads)
        for name, h, text in (("ollafleet_balancer_queue_wait_seconds", m.queue_wait_seconds,
                               "Time requests waited in the balancer's queue"),
                              ("ollafleet_balancer_task_wait_seconds", t.wait_seconds,
                               "Time Open WebUI task requests waited in the balancer's queue"),
                              ("ollafleet_balancer_first_token_seconds", m.first_token_seconds,
                               "Time from arrival to the first byte of the answer")):
            yield HistogramMetricFamily(name, text, buckets=[(le, float(n)) for le, n in h.buckets()],
                                        sum_value=h.sum)


def status_app(daemon: Daemon, balancer: Balancer | None, alerter: Alerter | None = None,
               timeline: Timeline | None = None) -> web.Application:
    registry = CollectorRegistry()
    registry.register(_Collector(daemon, balancer))

    async def status(_: web.Request) -> web.Response:
        return web.json_response(scrub_data(status_json(daemon, balancer, alerter, timeline)))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def html(request: web.Request) -> web.Response:
        data = scrub_data(status_json(daemon, balancer, alerter, timeline))
        text = page.main(data) if request.query.get("part") == "main" else page.page(data)
        resp = web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})
        resp.enable_compression()   # the charts' SVG shrinks tenfold; sent every few seconds
        return resp

    app = web.Application()
    app.router.add_get("/", html)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
