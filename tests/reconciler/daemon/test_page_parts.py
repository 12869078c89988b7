"""Pieces of the status page an administrator reads: a note shared by every node shown once,
long texts folded, histograms as percentiles, the GPU's num_ctx from the poll or from what the
balancer sent, fields of newer versions shown (escaped) rather than dropped."""

from __future__ import annotations

from html import escape
from typing import Any

from reconciler.daemon import page
from reconciler.daemon.status import gpu_view
from reconciler.daemon.timeline import Timeline

ENV_NOTE = "not changeable through the API, set in the node's environment: default keep-alive"


def _targets(**notes: list[str]) -> dict[str, Any]:
    return {"targets": {name: {"ok": True, "applied": 0, "failed": 0, "errors": [], "drift": [], "notes": n}
                        for name, n in notes.items()}}


def test_a_note_every_node_shares_is_shown_once() -> None:
    html = page.main(_targets(**{"ollama/gpu-1": [ENV_NOTE, "Ollama 0.13.5; loaded: qwq:32b"],
                                 "ollama/gpu-2": [ENV_NOTE, "Ollama 0.13.5; loaded: codestral:22b"],
                                 "ollama/gpu-3": [ENV_NOTE]}))
    assert html.count(escape(ENV_NOTE)) == 1
    assert "(every target)" in html
    assert "loaded: qwq:32b" in html and "loaded: codestral:22b" in html


def test_a_long_text_is_folded_and_a_short_one_is_not() -> None:
    long = "model pull failed: " + "x" * 400
    html = page.main({"errors": [long, "gpu-2: refused"]})
    assert f"<summary>{escape(long[:100])}" in html and "</details>" in html
    assert "gpu-2: refused" in html and html.count("<details") == 1


def test_histograms_show_percentiles_not_buckets() -> None:
    buckets = {"0.5": 50, "1.0": 90, "2.0": 99, "5.0": 100, "+Inf": 100}
    html = page.main({"balancer": {"url": "http://127.0.0.1:1", "nodes": [], "metrics": {
        "first_token_seconds": {"buckets": buckets, "sum": 60.0, "count": 100}}}})
    assert "p50 ≤ 0.5 s" in html and "p90 ≤ 1.0 s" in html and "p99 ≤ 2.0 s" in html and "mean 0.60 s" in html
    assert "+Inf" not in html and "buckets" not in html


def test_num_ctx_comes_from_the_poll_else_from_what_the_balancer_sent() -> None:
    node = {"loaded": ["codestral:22b"], "runner_model": "codestral:22b", "runner_num_ctx": 30000}
    assert gpu_view(node, {}) == {"model": "codestral:22b", "num_ctx": 30000, "num_ctx_from": "sent",
                                  "also_loaded": []}
    assert gpu_view(node, {"codestral:22b": 30016})["num_ctx"] == 30016
    # loaded by someone else: the poll's model, and no num_ctx the balancer never sent
    other = {"loaded": ["qwq:32b"], "runner_model": "codestral:22b", "runner_num_ctx": 30000}
    assert gpu_view(other, {})["model"] == "qwq:32b" and gpu_view(other, {})["num_ctx"] is None
    card = page.main({"balancer": {"nodes": [{"name": "gpu-1", **node, "gpu": gpu_view(node, {})}]}})
    assert "<b>codestral:22b</b>, num_ctx 30000" in card and "(as sent)" in card


def test_fields_of_newer_versions_are_shown_escaped() -> None:
    clock = lambda: 1_767_225_600.0  # noqa: E731
    tl = Timeline(clock)
    tl.event("first_token", "<img src=x onerror=alert(1)>", 1.0)
    data = {"added_later": {"ok": False, "problems": ["<script>alert(1)</script>"]},
            "over_time": tl.to_json(),
            "balancer": {"nodes": [{"name": "gpu-1", "task_requests": {"<b>title</b>": 3}}],
                         "metrics": {"task_requests_total": 7}}}
    html = page.main(data)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>title</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;title&lt;/b&gt;: 3" in html
    assert "task requests total" in html and "<h2>More</h2>" in html


def test_the_headline_says_what_is_wrong() -> None:
    def headline(data: dict[str, Any]) -> str:
        html = page.main(data)
        return html[html.index('<h1 id="headline">'):html.index("</h1>")]
    up = {"name": "gpu-1", "reachable": True, "reliability": "Reliable"}
    assert "healthy" in headline({"balancer": {"nodes": [up]}, "last_pass": {"ok": True}})
    degraded = headline({"balancer": {"nodes": [up, {"name": "gpu-2", "reachable": False},
                                                {"name": "gpu-3", "reachable": True, "reliability": "Unreliable"}]},
                         "cluster": {"role": "leader", "redis": "down"}, "last_pass": {"ok": True}})
    assert "degraded" in degraded and "gpu-2 unreachable" in degraded and "gpu-3 failing requests" in degraded
    assert "Redis unreachable" in degraded
    problems = headline({"errors": ["ollama/gpu-2: pull failed"], "last_pass": {"ok": False}})
    assert "problems" in problems and "1 error(s), listed below" in problems


def test_a_failed_verify_is_shown_plainly_and_degrades_the_headline() -> None:
    at = 1_767_225_600.0
    up = {"name": "gpu-1", "reachable": True, "reliability": "Reliable"}
    bad = {"balancer": {"nodes": [up]}, "last_pass": {"ok": True},
           "verify": {"at": at, "ok": False, "checked": [],
                      "problems": ['models."coder<img src=x onerror=alert(1)>": an employee does not see it',
                                   "balancer http://127.0.0.1:1: lists the helper model coder-v1:latest"]}}
    html = page.main(bad)
    headline = html[html.index('<h1 id="headline">'):html.index("</h1>")]
    assert "degraded" in headline and "verify found 2 problem(s)" in headline
    assert "an employee does not see it" in headline
    section = html[html.index('id="verify"'):]
    section = section[:section.index("</div>")]
    assert page._when(at) in section and "2 problem(s)" in section
    assert "lists the helper model coder-v1:latest" in section and "an employee does not see it" in section
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "<h2>More</h2>" not in html, "verify has its own section, not the generic one"

    good = {**bad, "verify": {"at": at, "ok": True, "problems": [],
                              "checked": ["balancer lists 2 models", "an employee sees 2 public models"]}}
    html = page.main(good)
    headline = html[html.index('<h1 id="headline">'):html.index("</h1>")]
    assert "healthy" in headline and "verify" not in headline
    section = html[html.index('id="verify"'):]
    assert '<span class="ok">ok</span>' in section[:section.index("</div>")]
    assert "an employee sees 2 public models" in section
