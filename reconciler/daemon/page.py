"""The HTML status page at `/` of the status address: one screen over the same data as /status.

Rendered on the server from status_json() with html.escape on every value: no template engine
to install, nothing fetched from the internet, and the page works without JavaScript (a
<noscript> refresh reloads it). With JavaScript, a few lines fetch `/?part=main` every few
seconds and swap the content in place, so the page changes without reloading.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from html import escape
from typing import Any

from reconciler.daemon import page_time
from reconciler.daemon.activity import describe

REFRESH_SECONDS = 3          # with JavaScript: the content is swapped in place this often
NOSCRIPT_REFRESH_SECONDS = 15   # without: the page reloads (which closes what the reader unfolded)
FOLD = 160                   # longer texts are folded (<details>)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}
h1{font-size:1.35em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.1em 0 .3em} h3{font-size:1em;margin:0 0 .2em}
table{border-collapse:collapse;background:#fff;width:100%} td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top} th{background:#f0f0f0} .ok{color:#17803d;font-weight:600}
.bad{color:#b3261e;font-weight:600} .warn{color:#a05a00;font-weight:600} .dim{color:#777}
.box{background:#fff;border:1px solid #ddd;padding:6px 8px} code{font-size:.95em;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:6px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:8px}
.card{background:#fff;border:1px solid #ddd;border-radius:4px;padding:8px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:4px 12px} figure{margin:0}
.cards.wide{grid-template-columns:1fr}
figcaption{font-size:.85em;color:#555} .scroll{overflow-x:auto}
.num{font-size:1.25em;font-weight:600} dl{margin:.2em 0;display:grid;grid-template-columns:auto 1fr;gap:1px 10px}
dt{color:#666} dd{margin:0;overflow-wrap:anywhere} details summary{cursor:pointer}
svg.chart{width:100%;max-width:560px;height:auto;display:block;background:#fff}
svg.chart text{font-size:8px;fill:#666} svg.chart .axis{stroke:#bbb;stroke-width:.6}
svg.chart polyline{fill:none;stroke-width:1.3} .p50{stroke:#1f6feb;fill:#1f6feb} .p90{stroke:#d97706;fill:#d97706}
.queue{stroke:#6f42c1;fill:#6f42c1} rect.bar{fill:#0f766e} rect.down{fill:#b3261e;fill-opacity:.13}
.strips rect.up{fill:#17803d;fill-opacity:.75} .strips rect.down{fill:#b3261e;fill-opacity:.9}
.key{font-size:.85em} .key b{display:inline-block;width:10px;height:3px;vertical-align:middle;margin:0 3px 0 8px}
@media (max-width:600px){body{margin:.5em;font-size:13px}.cards{grid-template-columns:1fr}
td,th{padding:2px 4px}}
"""

_SCRIPT = """
(function(){var main=document.getElementById('main');
setInterval(function(){fetch('/?part=main',{cache:'no-store'}).then(function(r){
if(!r.ok)throw new Error(r.status);return r.text();}).then(function(t){var open={};
main.querySelectorAll('details[open]').forEach(function(d){open[d.dataset.k]=1;});main.innerHTML=t;
main.querySelectorAll('details').forEach(function(d){if(open[d.dataset.k])d.open=true;});})
.catch(function(){var s=document.getElementById('stale');if(s)s.textContent=' (daemon not answering)';});},%d);})();
""" % (REFRESH_SECONDS * 1000)


def _e(value: Any) -> str:
    return escape("-" if value is None or value == "" else str(value))


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"


def _no_userinfo(url: Any) -> str:
    """A URL without a user:password part, should one be written in the file. Text, not a URL
    parser: a password already scrubbed to [REDACTED] is no valid URL any more."""
    if not isinstance(url, str):
        return _e(url)
    return _e(_USERINFO.sub(r"\1", url))


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def _cls(good: bool | None) -> str:
    return "ok" if good else "dim" if good is None else "bad"


def _fold(text: Any, summary: str = "") -> str:
    """A text, folded when long: its start shows, the rest opens on a click (no script needed)."""
    shown = "-" if text is None or text == "" else str(text)
    if len(shown) <= FOLD:
        return escape(shown)
    head = summary or shown[:FOLD - 60].rstrip() + " \u2026"
    key = hashlib.sha1(shown.encode()).hexdigest()[:10]
    return f'<details data-k="{key}"><summary>{escape(head)}</summary>{escape(shown)}</details>'


def _list(items: Any, css: str = "") -> str:
    if not items:
        return '<span class="dim">-</span>'
    lines = "<br>".join(_fold(i) for i in items)
    return f'<span class="{css}">{lines}</span>' if css else lines


def _seconds(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.2f} s" if v < 10 else f"{v:.0f} s"


def page(data: dict[str, Any]) -> str:
    """The whole document."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH_SECONDS}"></noscript>'
            f"<title>ollafleet status</title><style>{_STYLE}</style></head><body>"
            f'<div id="main">{main(data)}</div><script>{_SCRIPT}</script></body></html>')


def main(data: dict[str, Any]) -> str:
    """The part that is swapped in place on every refresh: first the four questions (is anything
    wrong, are people waiting, what do the GPUs hold, what changed), then the details."""
    over_time = data.get("over_time")
    return "".join([_header(data), _verify(data), page_time.wait(over_time), _nodes(data),
                    page_time.loads(over_time), _running(data), _passes(data),
                    _file(data), _cluster(data), _alerts(data), _retries(data), _targets(data), _balancer(data),
                    _other(data)])


def _cluster(data: dict[str, Any]) -> str:
    """[cluster]: whether this daemon reconciles, and whether it reaches Redis."""
    c = data.get("cluster")
    if not c:
        return ""
    role = ('<span class="ok">leader</span>: this daemon reconciles' if c.get("role") == "leader"
            else '<span class="warn">standby</span>: it serves as a balancer; the leader reconciles')
    shared = c.get("balancer") or {}
    if c.get("redis") == "down" or shared.get("redis") == "down":
        since = min((t for t in (c.get("redis_down_since"), shared.get("redis_down_since")) if t), default=None)
        error = c.get("redis_error") or shared.get("redis_error")
        redis = (f'<span class="bad">Redis unreachable</span> since {_when(since)}'
                 + (f" ({_e(error)})" if error else "")
                 + ": no pass applies; the balancer serves on its own knowledge")
    else:
        redis = '<span class="ok">Redis reachable</span>: slots and caches shared with the other balancers'
    return (f'<h2>Cluster</h2><div class="box" id="cluster"><b>{_e(c.get("name"))}</b>: {role}<br>{redis}</div>')


def _retries(data: dict[str, Any]) -> str:
    """Items whose change failed: the last error, and when the daemon tries them again."""
    items = data.get("retries") or []
    if not items:
        return ""
    rows = []
    for r in items:
        kind = ('<span class="bad">permanent</span>: not retried for this file and state until'
                if r.get("kind") == "permanent" else '<span class="warn">temporary</span>: next try')
        rows.append(f"<tr><td>{_e(r.get('item'))}</td><td>{kind} {_when(r.get('next_retry'))}</td>"
                    f"<td>{_e(r.get('failures'))}</td><td>{_list([r.get('error')], 'bad')}</td></tr>")
    return ('<h2>Failed items, retried later</h2><table id="retries"><tr><th>item</th><th>next try</th>'
            "<th>failures in a row</th><th>last error</th></tr>" + "".join(rows) + "</table>")


def _alerts(data: dict[str, Any]) -> str:
    al = data.get("alerts")
    if not al or not al.get("configured"):
        return ""
    parts = [f"sent by {_e(' and '.join(al['configured']))}"]
    if al.get("delivery_failing"):
        parts.append(f'<span class="bad">delivery failing, {_e(al.get("undelivered"))} waiting (retried)</span>')
    if al.get("open"):
        parts.append('<span class="bad">open:</span><br>' + _list(al["open"], "bad"))
    if al.get("watching"):
        parts.append('<span class="warn">wrong, alert after [alerts] after:</span><br>' + _list(al["watching"], "warn"))
    return '<h2>Alerts</h2><div class="box">' + "<br>".join(parts) + "</div>"


def _header(data: dict[str, Any]) -> str:
    """The headline: healthy, degraded or problems, and why, in a few lines."""
    errors = data.get("errors") or []
    last = data.get("last_pass")
    nodes = (data.get("balancer") or {}).get("nodes") or []
    down = [str(n.get("name")) for n in nodes if n.get("reachable") is False]
    shaky = [str(n.get("name")) for n in nodes if n.get("reachable") is not False
             and n.get("reliability") not in (None, "Reliable")]
    why = []
    if data.get("file_errors"):
        why.append("the file on disk is rejected (the last good version stays in force)")
    if last and not last.get("ok") and not errors:
        why.append("the last pass failed")
    if down:
        why.append(f"{', '.join(down)} unreachable")
    if shaky:
        why.append(f"{', '.join(shaky)} failing requests")
    alerts = (data.get("alerts") or {}).get("open") or []
    if alerts:
        why.append(f"{len(alerts)} alert(s) open")
    if data.get("needs_restart"):
        why.append("a setting needs a restart of the daemon")
    verified = data.get("verify")
    if verified and not verified.get("ok"):
        problems = verified.get("problems") or []
        why.append(f"verify found {len(problems)} problem(s) in what employees see"
                   + (f", first: {_cut(problems[0])}" if problems else ""))
    cluster = data.get("cluster") or {}
    if cluster.get("redis") == "down" or (cluster.get("balancer") or {}).get("redis") == "down":
        why.append("Redis unreachable")
    bad = bool(errors or data.get("file_errors") or (last and not last.get("ok")))
    if bad:
        head = '<span class="bad">problems</span>'
        why = [f"{len(errors)} error(s), listed below"] * bool(errors) + why
    elif why:
        head = '<span class="warn">degraded</span>'
    else:
        head = '<span class="ok">healthy</span>'
    reason = f": {_e('; '.join(why))}" if why else ""
    out = [f'<h1 id="headline">ollafleet: {head}<span class="why">{reason}</span></h1>',
           f'<div class="dim">updated {_when(data.get("now"))}<span id="stale"></span></div>']
    if data.get("suspended"):
        out.append('<div class="warn">suspended: drift is only reported</div>')
    if errors:
        out.append('<h2>Problems</h2><div class="box">' + _list(errors, "bad") + "</div>")
    return "".join(out)


def _cut(text: Any, n: int = 120) -> str:
    shown = str(text)
    return shown if len(shown) <= n else shown[:n - 1].rstrip() + "\u2026"


def _verify(data: dict[str, Any]) -> str:
    """[reconcile] verify: what an employee saw after the last pass that changed Open WebUI or models."""
    v = data.get("verify")
    if not v:
        return ""
    head = f"checked {_when(v.get('at'))} as an employee: "
    if v.get("ok"):
        body = '<span class="ok">ok</span>'
        if v.get("checked"):
            body += f' <span class="dim">({_e("; ".join(map(str, v["checked"])))})</span>'
    else:
        problems = v.get("problems") or []
        body = (f'<span class="bad">{len(problems)} problem(s)</span><br>' + _list(problems, "bad"))
    return f'<h2>What employees see (verify)</h2><div class="box" id="verify">{head}{body}</div>'


def _file(data: dict[str, Any]) -> str:
    rev = data.get("revision") or {}
    commit = rev.get("git_commit")
    out = ['<h2>File</h2><div class="box">',
           f"<code>{_e(rev.get('path'))}</code> sha256 <code>{_e(str(rev.get('sha256', ''))[:12])}</code>",
           f" git commit <code>{_e(commit[:10])}</code>" + (" (modified)" if rev.get("git_dirty") else "")
           if commit else " (not in git)",
           f"<br>in force since {_when(rev.get('loaded_at'))}" if rev.get("loaded_at") else ""]
    if data.get("file_errors"):
        attempted = data.get("rejected_sha256")
        out.append(f'<br><span class="bad">rejected save</span>'
                   + (f" (sha256 <code>{_e(str(attempted)[:12])}</code>)" if attempted else "")
                   + ": the version above stays in force<br>" + _list(data["file_errors"], "bad"))
    for line in data.get("needs_restart") or []:
        out.append(f'<br><span class="warn">{_e(line)}</span>')
    out.append("</div>")
    return "".join(out)


def _running(data: dict[str, Any]) -> str:
    act = data.get("activity")
    if not data.get("pass_running") or not act:
        return ""
    return (f'<h2>Pass running</h2><div class="box"><span class="warn">{_e(act.get("reason"))}</span> since '
            f"{_when(act.get('started'))}: {_e(describe(act))}<br>{_list((act.get('pending') or [])[:20])}</div>")


# shown in their own places on a node's card; any other field is listed under them
_NODE_FIELDS = {"name", "url", "reliability", "reachable", "in_flight", "max_concurrent", "models", "loaded",
                "declared", "last_error", "unfit", "runner_model", "runner_num_ctx", "learned", "queued", "gpu"}


def _nodes(data: dict[str, Any]) -> str:
    nodes = (data.get("balancer") or {}).get("nodes") or []
    if not nodes:
        return ""
    return ("<h2>Nodes</h2>" + page_time.availability(data.get("over_time"))
            + '<div class="cards">' + "".join(_node(n) for n in nodes) + "</div>")


def _node(n: dict[str, Any]) -> str:
    reach, rel = n.get("reachable"), n.get("reliability")
    state = ('<span class="bad">unreachable</span>' if reach is False
             else f'<span class="{_cls(rel == "Reliable")}">{_e(rel)}</span>'
             + ("" if reach else ' <span class="dim">(not polled yet)</span>'))
    gpu = n.get("gpu") or {"model": n.get("runner_model"), "num_ctx": n.get("runner_num_ctx")}
    holds = '<span class="dim">nothing loaded</span>'
    if gpu.get("model"):
        ctx = (f'num_ctx {_e(gpu["num_ctx"])}' + (' <span class="dim">(as sent)</span>'
                                                   if gpu.get("num_ctx_from") == "sent" else "")
               if gpu.get("num_ctx") else '<span class="dim">num_ctx not reported</span>')
        holds = f"<b>{_e(gpu['model'])}</b>, {ctx}"
        if gpu.get("also_loaded"):
            holds += f'<br><span class="dim">also loaded: {_e(", ".join(map(str, gpu["also_loaded"])))}</span>'
    if reach is False and gpu.get("model"):
        holds = f'<span class="dim">last known: {holds}</span>'
    rows = [("state", state),
            ("GPU holds", holds),
            ("in flight", f"{_e(n.get('in_flight'))} of {_e(n.get('max_concurrent'))}"),
            ("queued", _e(n.get("queued", 0))),
            ("models", _models(n))]
    if n.get("unfit"):
        rows.append(("no requests", f'<span class="warn">it {_fold(n["unfit"])}</span>'))
    if n.get("last_error") and str(n["last_error"]) not in str(n.get("unfit") or ""):
        rows.append(("last error", f'<span class="bad">{_fold(n["last_error"])}</span>'))
    if n.get("learned"):
        rates = "<br>".join(
            f"{_e(m)}: load {_e(r.get('load_s'))} s, prompt {_e(r.get('prompt_tokens_per_s'))} tokens/s, "
            f"generation {_e(r.get('tokens_per_s'))} tokens/s, answers ~{_e(r.get('answer_tokens'))} tokens"
            for m, r in n["learned"].items() if isinstance(r, dict))
        key = hashlib.sha1(f"learned {n.get('name')}".encode()).hexdigest()[:10]
        rows.append(("learned", f'<details data-k="{key}"><summary>rates of {len(n["learned"])} model(s)'
                                f"</summary>{rates}</details>"))
    rows += [(k.replace("_", " "), _value(n[k])) for k in sorted(n) if k not in _NODE_FIELDS]
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (f'<div class="card node" data-node="{_e(n.get("name"))}"><h3>{_e(n.get("name"))} '
            f'<span class="dim">{_no_userinfo(n.get("url"))}</span></h3><dl>{body}</dl></div>')


def _models(node: dict[str, Any]) -> str:
    present = node.get("models")
    declared = node.get("declared")
    if present is None:
        return '<span class="dim">not known yet</span>' + (f"<br>declared: {_list(declared)}" if declared else "")
    if declared is None:
        return _list(present)
    have = {m.split(":")[0] if m.endswith(":latest") else m for m in present}
    out = []
    for m in declared:
        found = m in have or m in present
        out.append(f'<span class="{"ok" if found else "bad"}">{_e(m)}</span>'
                   + ("" if found else ' <span class="bad">(missing)</span>'))
    out += [f'<span class="dim">{_e(m)} (not declared)</span>' for m in present
            if m not in declared and m.removesuffix(":latest") not in declared]
    return "<br>".join(out) or '<span class="dim">-</span>'


def _value(v: Any) -> str:
    if isinstance(v, dict) and isinstance(v.get("buckets"), dict):
        return _percentiles(v)
    if isinstance(v, dict):
        return "<br>".join(f"{_e(k)}: {_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return _list(v)
    if isinstance(v, float):
        return _e(f"{v:.3g}")
    return _fold(v)


def bucket_percentile(buckets: dict[str, Any], q: float) -> str | None:
    """The bound under which a share q of the observations fell (cumulative buckets, so an
    upper bound, not the exact value); None without observations."""
    pairs = [(k, n) for k, n in buckets.items() if isinstance(n, (int, float))]
    total = pairs[-1][1] if pairs else 0
    if not total:
        return None
    for bound, n in pairs:
        if n >= q * total:
            return bound
    return None


def _percentiles(h: dict[str, Any]) -> str:
    """A histogram as people read it: how many, the mean, and p50/p90/p99 (the raw buckets
    are for Prometheus, on /metrics)."""
    count, total = h.get("count") or 0, h.get("sum") or 0.0
    if not count:
        return '<span class="dim">none yet</span>'
    parts = [f'<span class="num">{_e(count)}</span>', f"mean {_seconds(total / count)}"]
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        bound = bucket_percentile(h["buckets"], q)
        if bound is not None:
            parts.append(f"{name} {'over ' + _e(_last_bound(h['buckets'])) + ' s' if bound == '+Inf' else '≤ ' + _e(bound) + ' s'}")
    return "<br>".join(parts)


def _last_bound(buckets: dict[str, Any]) -> str:
    finite = [k for k in buckets if k != "+Inf"]
    return finite[-1] if finite else "0"


def _targets(data: dict[str, Any]) -> str:
    """Each target's result at the last pass; a note several targets share is shown once."""
    targets = data.get("targets") or {}
    if not targets:
        return ""
    seen: dict[str, list[str]] = {}
    for name, rec in targets.items():
        for note in rec.get("notes") or []:
            seen.setdefault(str(note), []).append(name)
    shared = {note: names for note, names in seen.items() if len(names) > 1}
    rows = []
    for name, rec in targets.items():
        result = '<span class="ok">ok</span>' if rec.get("ok") else '<span class="bad">error</span>'
        own = [n for n in rec.get("notes") or [] if str(n) not in shared]
        rows.append(f"<tr><td><b>{_e(name)}</b></td><td>{result}</td><td>{_e(rec.get('applied'))}</td>"
                    f"<td>{_e(rec.get('failed'))}</td><td>{_list(rec.get('errors'), 'bad')}</td>"
                    f"<td>{_list(rec.get('drift'), 'warn')}</td><td>{_list(own, 'dim')}</td></tr>")
    common = ""
    if shared:
        lines = [f"{_fold(note)} <span class=dim>({'every target' if len(names) == len(targets) else _e(', '.join(names))})</span>"
                 for note, names in shared.items()]
        common = '<div class="box dim" id="common-notes">seen at the start of the pass: ' + "<br>".join(lines) + "</div>"
    return ("<h2>Targets (Ollama nodes, Open WebUI) at the last pass</h2>" + common
            + '<div class="scroll"><table><tr><th>target</th><th>result</th>'
            "<th>applied</th><th>failed</th><th>errors</th><th>drift not corrected</th><th>other notes</th></tr>"
            + "".join(rows) + "</table></div>")


def _balancer(data: dict[str, Any]) -> str:
    bal = data.get("balancer")
    if not bal:
        return ""
    cells = []
    for key, value in (bal.get("metrics") or {}).items():
        shown = _value(value) if isinstance(value, dict) else f'<span class="num">{_value(value)}</span>'
        cells.append(f'<div class="box"><div class="dim">{_e(key.replace("_", " "))}</div>{shown}</div>')
    return (f"<h2>Balancer counters since the start <span class=dim>{_no_userinfo(bal.get('url'))}</span></h2>"
            f"<div class=grid>{''.join(cells)}</div>")


def _passes(data: dict[str, Any]) -> str:
    history = list(reversed(data.get("history") or []))
    if not history:
        return '<h2>Passes</h2><div class="box dim">no pass has ended yet</div>'
    rows = []
    for p in history:
        result = '<span class="ok">ok</span>' if p.get("ok") else '<span class="bad">failed</span>'
        rows.append(f"<tr><td>{_when(p.get('finished'))}</td><td>{_e(p.get('reason'))}</td><td>{result}</td>"
                    f"<td>{_many(p.get('changed'))}</td><td>{_many(p.get('errors'), 'bad')}</td></tr>")
    return ('<h2>Last passes: what changed</h2><div class="scroll"><table><tr><th>ended</th><th>why</th>'
            "<th>result</th><th>changed</th><th>failed</th></tr>" + "".join(rows) + "</table></div>")


def _many(items: Any, css: str = "") -> str:
    """A list; beyond five lines, the rest folded."""
    items = list(items or [])
    if len(items) <= 5:
        return _list(items, css)
    key = hashlib.sha1(repr(items).encode()).hexdigest()[:10]
    return (_list(items[:4], css) + f'<details data-k="{key}"><summary>{len(items) - 4} more</summary>'
            + _list(items[4:], css) + "</details>")


# the keys every section above reads; any other key (added by a newer version) is shown at the end
_KNOWN = {"now", "revision", "file_errors", "rejected_sha256", "suspended", "pass_running", "activity",
          "newer_file_waiting", "last_pass", "applied_revision", "attempted_revision", "retries", "history",
          "targets", "pending_drift", "errors", "needs_restart", "listening", "counters", "alerts", "cluster",
          "balancer", "over_time", "verify"}


def _other(data: dict[str, Any]) -> str:
    extra = {k: v for k, v in data.items() if k not in _KNOWN and v not in (None, [], {}, "")}
    if not extra:
        return ""
    rows = "".join(f"<tr><th>{_e(k.replace('_', ' '))}</th><td>{_value(v)}</td></tr>" for k, v in sorted(extra.items()))
    return f'<h2>More</h2><div class="scroll"><table id="more">{rows}</table></div>'
