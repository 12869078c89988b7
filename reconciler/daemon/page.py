"""The HTML status page at `/` of the status address: one screen over the same data as /status.

Rendered on the server from status_json() with html.escape on every value: no template engine
to install, nothing fetched from the internet, and the page works without JavaScript (a
<noscript> refresh reloads it). With JavaScript, a few lines fetch `/?part=main` every few
seconds and swap the content in place, so the page changes without reloading.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from typing import Any

from reconciler.daemon.activity import describe

REFRESH_SECONDS = 3

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;background:#fff;width:100%} td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top} th{background:#f0f0f0} .ok{color:#17803d;font-weight:600}
.bad{color:#b3261e;font-weight:600} .warn{color:#a05a00;font-weight:600} .dim{color:#888}
.box{background:#fff;border:1px solid #ddd;padding:6px 8px} code{font-size:.95em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:6px}
.num{font-size:1.25em;font-weight:600}
"""

_SCRIPT = """
(function(){var main=document.getElementById('main');
setInterval(function(){fetch('/?part=main',{cache:'no-store'}).then(function(r){
if(!r.ok)throw new Error(r.status);return r.text();}).then(function(t){main.innerHTML=t;})
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


def _list(items: Any, css: str = "") -> str:
    if not items:
        return '<span class="dim">-</span>'
    lines = "<br>".join(_e(i) for i in items)
    return f'<span class="{css}">{lines}</span>' if css else lines


def page(data: dict[str, Any]) -> str:
    """The whole document."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>'
            f"<title>ollafleet status</title><style>{_STYLE}</style></head><body>"
            f'<div id="main">{main(data)}</div><script>{_SCRIPT}</script></body></html>')


def main(data: dict[str, Any]) -> str:
    """The part that is swapped in place on every refresh."""
    return "".join([_header(data), _cluster(data), _running(data), _alerts(data), _nodes(data), _targets(data),
                    _retries(data), _balancer(data), _passes(data)])


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
    rev = data.get("revision") or {}
    errors = data.get("errors") or []
    last = data.get("last_pass")
    down = [n.get("name") for n in (data.get("balancer") or {}).get("nodes") or [] if n.get("reachable") is False]
    health = ('<span class="bad">problems</span>' if errors or (last and not last.get("ok"))
              else f'<span class="warn">degraded: {_e(", ".join(map(str, down)))} unreachable</span>' if down
              else '<span class="ok">healthy</span>')
    commit = rev.get("git_commit")
    out = [f"<h1>ollafleet: {health}</h1>",
           f'<div class="dim">updated {_when(data.get("now"))}<span id="stale"></span></div>',
           '<h2>File</h2><div class="box">',
           f"<code>{_e(rev.get('path'))}</code> sha256 <code>{_e(str(rev.get('sha256', ''))[:12])}</code>",
           f" git commit <code>{_e(commit[:10])}</code>" + (" (modified)" if rev.get("git_dirty") else "")
           if commit else " (not in git)",
           f"<br>in force since {_when(rev.get('loaded_at'))}" if rev.get("loaded_at") else ""]
    if data.get("suspended"):
        out.append('<br><span class="warn">suspended: drift is only reported</span>')
    if data.get("file_errors"):
        attempted = data.get("rejected_sha256")
        out.append(f'<br><span class="bad">rejected save</span>'
                   + (f" (sha256 <code>{_e(str(attempted)[:12])}</code>)" if attempted else "")
                   + ": the version above stays in force<br>" + _list(data["file_errors"], "bad"))
    out.append("</div>")
    if errors:
        out.append('<h2>Problems</h2><div class="box">' + _list(errors, "bad") + "</div>")
    return "".join(out)


def _running(data: dict[str, Any]) -> str:
    act = data.get("activity")
    if not data.get("pass_running") or not act:
        return ""
    return (f'<h2>Pass running</h2><div class="box"><span class="warn">{_e(act.get("reason"))}</span> since '
            f"{_when(act.get('started'))}: {_e(describe(act))}<br>{_list((act.get('pending') or [])[:20])}</div>")


_NODE_FIELDS = {"name", "url", "reliability", "reachable", "in_flight", "max_concurrent", "models", "loaded",
                "declared", "last_error"}


def _nodes(data: dict[str, Any]) -> str:
    bal = data.get("balancer") or {}
    nodes = bal.get("nodes") or []
    if not nodes:
        return ""
    extra = sorted({k for n in nodes for k in n} - _NODE_FIELDS)   # fields other versions add (queue, ...)
    head = "".join(f"<th>{_e(k.replace('_', ' '))}</th>" for k in
                   ["node", "state", "in flight", "loaded", "models present / declared", *extra, "last error"])
    rows = []
    for n in nodes:
        reach = n.get("reachable")
        rel = n.get("reliability")
        state = ('<span class="bad">unreachable</span>' if reach is False
                 else f'<span class="{_cls(rel == "Reliable")}">{_e(rel)}</span>'
                 + ("" if reach else ' <span class="dim">(not polled yet)</span>'))
        rows.append(f"<tr data-node=\"{_e(n.get('name'))}\"><td><b>{_e(n.get('name'))}</b><br>"
                    f"<span class=dim>{_no_userinfo(n.get('url'))}</span></td><td>{state}</td>"
                    f"<td>{_e(n.get('in_flight'))}/{_e(n.get('max_concurrent'))}</td>"
                    f"<td>{_list(n.get('loaded'), 'dim' if reach is False else '')}</td><td>{_models(n)}</td>"
                    + "".join(f"<td>{_value(n.get(k))}</td>" for k in extra)
                    + f"<td>{_list([n['last_error']] if n.get('last_error') else [], 'bad')}</td></tr>")
    return f"<h2>Nodes</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


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
    if isinstance(v, dict):
        return "<br>".join(f"{_e(k)}: {_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return _list(v)
    if isinstance(v, float):
        return _e(f"{v:.3g}")
    return _e(v)


def _targets(data: dict[str, Any]) -> str:
    targets = data.get("targets") or {}
    if not targets:
        return ""
    rows = []
    for name, rec in targets.items():
        result = '<span class="ok">ok</span>' if rec.get("ok") else '<span class="bad">error</span>'
        rows.append(f"<tr><td><b>{_e(name)}</b></td><td>{result}</td><td>{_e(rec.get('applied'))}</td>"
                    f"<td>{_e(rec.get('failed'))}</td><td>{_list(rec.get('errors'), 'bad')}</td>"
                    f"<td>{_list(rec.get('drift'), 'warn')}</td><td>{_list(rec.get('notes'), 'dim')}</td></tr>")
    return ("<h2>Targets (Ollama nodes, Open WebUI) at the last pass</h2><table><tr><th>target</th><th>result</th>"
            "<th>applied</th><th>failed</th><th>errors</th><th>drift not corrected</th><th>seen at the start of the pass</th></tr>"
            + "".join(rows) + "</table>")


def _balancer(data: dict[str, Any]) -> str:
    bal = data.get("balancer")
    if not bal:
        return ""
    cells = []
    for key, value in (bal.get("metrics") or {}).items():
        shown = _value(value) if isinstance(value, dict) else f'<span class="num">{_value(value)}</span>'
        cells.append(f'<div class="box"><div class="dim">{_e(key.replace("_", " "))}</div>{shown}</div>')
    return f"<h2>Balancer <span class=dim>{_no_userinfo(bal.get('url'))}</span></h2><div class=grid>{''.join(cells)}</div>"


def _passes(data: dict[str, Any]) -> str:
    history = list(reversed(data.get("history") or []))
    if not history:
        return '<h2>Passes</h2><div class="box dim">no pass has ended yet</div>'
    rows = []
    for p in history:
        result = '<span class="ok">ok</span>' if p.get("ok") else '<span class="bad">failed</span>'
        rows.append(f"<tr><td>{_when(p.get('finished'))}</td><td>{_e(p.get('reason'))}</td><td>{result}</td>"
                    f"<td>{_list(p.get('changed'))}</td><td>{_list(p.get('errors'), 'bad')}</td></tr>")
    return ("<h2>Last passes</h2><table><tr><th>ended</th><th>why</th><th>result</th><th>changed</th>"
            "<th>failed</th></tr>" + "".join(rows) + "</table>")
