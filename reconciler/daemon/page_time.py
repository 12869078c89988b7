"""The status page's pictures over time, from the daemon's history (`over_time` in /status,
timeline.py): people's time to first token and queue per model, model loads, and when each
node was down. Each for the last hour (a point a minute) and the last day (every ten minutes)."""

from __future__ import annotations

from html import escape
from typing import Any

from reconciler.daemon import charts

SPANS = (("hour", "last hour", 3600.0), ("day", "last day", 86400.0))
MAX_MODELS = 12


def _points(ot: dict[str, Any], key: str) -> tuple[list[dict[str, Any]], float]:
    series = ot.get(key) or {}
    pts = [p for p in series.get("points") or [] if isinstance(p, dict)]
    if isinstance(series.get("current"), dict):
        pts.append(series["current"])
    return pts, float(series.get("step") or 60.0)


def _span(ot: dict[str, Any], seconds: float, step: float) -> tuple[float, float]:
    """From the start of the oldest point kept to the end of the interval under way."""
    end = (float(ot.get("now") or 0.0) // step + 1) * step
    return end - seconds - step, end


def down_spans(pts: list[dict[str, Any]], step: float) -> list[tuple[float, float, str]]:
    """(start, end, which nodes) for each run of intervals in which some node was found down."""
    spans: list[tuple[float, float, str]] = []
    run: tuple[float, float, set[str]] | None = None
    for p in sorted(pts, key=lambda p: float(p.get("t") or 0.0)):
        t, down = float(p.get("t") or 0.0), {str(n) for n in p.get("down") or []}
        if run is not None and (not down or t > run[1]):
            spans.append((run[0], run[1], ", ".join(sorted(run[2]))))
            run = None
        if down:
            run = (t, t + step, down) if run is None else (run[0], t + step, run[2] | down)
    if run is not None:
        spans.append((run[0], run[1], ", ".join(sorted(run[2]))))
    return spans


def _models(ot: dict[str, Any]) -> list[str]:
    """Models people asked for since the start, the busiest first."""
    count: dict[str, float] = {}
    for key, _, _ in SPANS:
        for p in _points(ot, key)[0]:
            for m, v in (p.get("ttft") or {}).items():
                count[m] = count.get(m, 0) + (v.get("n") or 0 if isinstance(v, dict) else 0)
            for m, q in (p.get("queue") or {}).items():
                count.setdefault(m, 0)
    return sorted(count, key=lambda m: (-count[m], m))[:MAX_MODELS]


def _ttft(p: dict[str, Any], model: str, q: str) -> float | None:
    v = (p.get("ttft") or {}).get(model)
    return v.get(q) if isinstance(v, dict) and isinstance(v.get(q), (int, float)) else None


def _queue(p: dict[str, Any], model: str) -> float | None:
    if not p.get("sampled"):
        return None
    n = (p.get("queue") or {}).get(model, 0)
    return float(n) if isinstance(n, (int, float)) else None


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


def wait(ot: Any) -> str:
    """Per model: time to first token (p50, p90) and the longest queue, hour and day."""
    if not isinstance(ot, dict):
        return ""
    models = _models(ot)
    head = ('<h2>People\'s wait: time to first token and queue, per model</h2>'
            '<div class="key">time to first token <b class="p50" style="background:#1f6feb"></b>p50 '
            '<b class="p90" style="background:#d97706"></b>p90 '
            '<b class="queue" style="background:#6f42c1"></b>longest queue '
            '<b style="background:#b3261e33;height:8px"></b>a node down</div>')
    if not models:
        return head + '<div class="box dim">no request since the daemon started</div>'
    recent = ot.get("last_hour") or {}
    cards = []
    for model in models:
        figs = []
        for key, label, seconds in SPANS:
            pts, step = _points(ot, key)
            t0, t1 = _span(ot, seconds, step)
            down = down_spans(pts, step)
            ttft = [("p50", [(float(p["t"]), _ttft(p, model, "p50")) for p in pts]),
                    ("p90", [(float(p["t"]), _ttft(p, model, "p90")) for p in pts])]
            queue = [("queue", [(float(p["t"]), _queue(p, model)) for p in pts])]
            dots = key == "hour"
            figs.append(_figure(f"time to first token, {label}", charts.lines(
                f"{model} time to first token, {label}", ttft, t0, t1, step, " s", down, dots)))
            figs.append(_figure(f"queue, {label}", charts.lines(f"{model} queue, {label}", queue, t0, t1, step,
                                                                 "", down, dots)))
        r = recent.get(model) or {}
        summary = (f"last hour: p50 {_s(r.get('p50'))}, p90 {_s(r.get('p90'))}, {escape(str(r.get('n')))} request(s)"
                   if r else "no request in the last hour")
        cards.append(f'<div class="card model" data-model="{escape(model)}"><h3>{escape(model)}</h3>'
                     f'<div class="dim summary">{summary}</div><div class="charts">{"".join(figs)}</div></div>')
    return head + '<div class="cards wide">' + "".join(cards) + "</div>"


def _s(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else escape(f"{v:.2f} s" if v < 10 else f"{v:.0f} s")


def loads(ot: Any) -> str:
    """Model loads the balancer caused, per interval."""
    if not isinstance(ot, dict):
        return ""
    figs = []
    for key, label, seconds in SPANS:
        pts, step = _points(ot, key)
        t0, t1 = _span(ot, seconds, step)
        bars = []
        for p in pts:
            per = {m: n for m, n in (p.get("loads") or {}).items() if isinstance(n, (int, float))}
            tip = ", ".join(f"{m} {n:g}" for m, n in sorted(per.items()))
            bars.append((float(p["t"]), float(sum(per.values())), tip))
        figs.append(_figure(f"model loads, {label}", charts.bars(f"model loads, {label}", bars, t0, t1, step,
                                                                  down_spans(pts, step))))
    return '<h2>Model loads over time</h2><div class="card"><div class="charts">' + "".join(figs) + "</div></div>"


def availability(ot: Any) -> str:
    """A strip per node: when it was up and when down."""
    if not isinstance(ot, dict):
        return ""
    figs = []
    for key, label, seconds in SPANS:
        pts, step = _points(ot, key)
        t0, t1 = _span(ot, seconds, step)
        names = sorted({str(n) for p in pts for n in p.get("nodes") or []})
        rows = [(n, [(float(p["t"]), None if n not in (p.get("nodes") or []) else n not in (p.get("down") or []))
                     for p in pts]) for n in names]
        figs.append(_figure(f"nodes up (green) and down (red), {label}",
                            charts.strips(f"nodes, {label}", rows, t0, t1, step)))
    return '<div class="card"><div class="charts">' + "".join(figs) + "</div></div>"
