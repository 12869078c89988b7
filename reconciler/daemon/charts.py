"""Small charts as inline SVG, drawn on the server: no script, no file to fetch, readable in
any browser. Every value shown is escaped; every point has a <title> (a hover tooltip)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

W, H = 320, 96            # the viewBox; the SVG scales to the width of its box
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 6, 16

Point = tuple[float, float | None]   # (unix time, value; None = nothing that interval)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M")


def _nice(top: float) -> float:
    """A round upper bound for the y axis."""
    if top <= 0:
        return 1.0
    step = 10 ** len(str(int(top))) / 10 if top >= 1 else 0.1
    for mult in (1, 2, 2.5, 5, 10):
        if top <= step * mult:
            return step * mult
    return top


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class Frame:
    """The time span [t0, t1] and the y range of one chart, mapped onto the viewBox."""

    def __init__(self, t0: float, t1: float, top: float) -> None:
        self.t0, self.t1, self.top = t0, max(t1, t0 + 1), _nice(top)

    def x(self, t: float) -> float:
        return round(LEFT + (W - LEFT - RIGHT) * (t - self.t0) / (self.t1 - self.t0), 1)

    def y(self, v: float) -> float:
        return round(TOP + (H - TOP - BOTTOM) * (1 - min(v, self.top) / self.top), 1)

    def axes(self, unit: str) -> str:
        bottom, mid = H - BOTTOM, (self.t0 + self.t1) / 2
        return (f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W - RIGHT}" y2="{bottom}"/>'
                f'<text x="{LEFT - 3}" y="{TOP + 8}" text-anchor="end">{escape(_fmt(self.top))}{escape(unit)}</text>'
                f'<text x="{LEFT - 3}" y="{bottom}" text-anchor="end">0</text>'
                f'<text x="{LEFT}" y="{H - 3}">{_clock(self.t0)}</text>'
                f'<text x="{self.x(mid)}" y="{H - 3}" text-anchor="middle">{_clock(mid)}</text>'
                f'<text x="{W - RIGHT}" y="{H - 3}" text-anchor="end">{_clock(self.t1)}</text>')


def _svg(label: str, body: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
            f'>{body}</svg>')


def _down(frame: Frame, spans: Sequence[tuple[float, float, str]]) -> str:
    """Shaded bands where a node was down, on every chart of the same span."""
    out = []
    for start, end, who in spans:
        x0, x1 = frame.x(max(start, frame.t0)), frame.x(min(end, frame.t1))
        out.append(f'<rect class="down" x="{x0}" y="{TOP}" width="{max(x1 - x0, 1)}" height="{H - TOP - BOTTOM}">'
                   f"<title>{escape(who)} down {_clock(start)}-{_clock(end)}</title></rect>")
    return "".join(out)


def lines(label: str, series: Sequence[tuple[str, Sequence[Point]]], t0: float, t1: float, step: float,
          unit: str = "", down: Sequence[tuple[float, float, str]] = (), dots: bool = True) -> str:
    """One line per series (css class = its name), broken where no value; a dot per point (with
    dots=False only where a point stands alone, so a long span stays light to send)."""
    values = [v for _, pts in series for _, v in pts if v is not None]
    frame = Frame(t0, t1, max(values, default=0.0))
    body = [_down(frame, down), frame.axes(unit)]
    for name, pts in series:
        runs: list[list[tuple[float, float, float, float]]] = [[]]
        for t, v in pts:
            if v is None:
                runs.append([])
            else:
                runs[-1].append((frame.x(t + step / 2), frame.y(v), t, v))
        for run in runs:
            if len(run) > 1:
                body.append(f'<polyline class="{escape(name)}" points="{" ".join(f"{x},{y}" for x, y, _, _ in run)}"/>')
            if dots or len(run) == 1:
                body += [f'<circle class="{escape(name)}" cx="{x}" cy="{y}" r="1.6"><title>{_clock(t)} '
                         f"{escape(name)} {escape(_fmt(v))}{escape(unit)}</title></circle>" for x, y, t, v in run]
    return _svg(label, "".join(body))


def bars(label: str, pts: Sequence[tuple[float, float, str]], t0: float, t1: float, step: float,
         down: Sequence[tuple[float, float, str]] = ()) -> str:
    """A bar per interval: (start, count, tooltip)."""
    frame = Frame(t0, t1, max((v for _, v, _ in pts), default=0.0))
    body = [_down(frame, down), frame.axes("")]
    width = max(frame.x(t0 + step) - frame.x(t0) - 0.6, 0.8)
    for t, v, tip in pts:
        if v > 0:
            y = frame.y(v)
            body.append(f'<rect class="bar" x="{frame.x(t)}" y="{y}" width="{round(width, 1)}" '
                        f'height="{round(H - BOTTOM - y, 1)}"><title>{_clock(t)} {escape(tip)}</title></rect>')
    return _svg(label, "".join(body))


def strips(label: str, rows: Sequence[tuple[str, Sequence[tuple[float, bool | None]]]], t0: float, t1: float,
           step: float) -> str:
    """One strip per node: green where it was up, red where it was down, empty where unknown."""
    row_h, top = 14, 2
    height = top + row_h * len(rows) + BOTTOM
    frame = Frame(t0, t1, 1.0)
    body = []
    for i, (name, states) in enumerate(rows):
        y = top + i * row_h
        body.append(f'<text x="{LEFT - 3}" y="{y + 10}" text-anchor="end">{escape(name[:8])}</text>')
        for start, end, up in _runs(states, step):
            css = "up" if up else "down"
            body.append(f'<rect class="{css}" data-node="{escape(name)}" data-t="{start:.0f}" data-end="{end:.0f}" '
                        f'x="{frame.x(start)}" y="{y}" width="{round(max(frame.x(end) - frame.x(start), 0.8), 1)}" '
                        f'height="{row_h - 3}"><title>{escape(name)} {css} {_clock(start)}-{_clock(end)}'
                        f'</title></rect>')
    bottom, mid = height - BOTTOM, (frame.t0 + frame.t1) / 2
    body.append(f'<text x="{LEFT}" y="{height - 3}">{_clock(frame.t0)}</text>'
                f'<text x="{frame.x(mid)}" y="{height - 3}" text-anchor="middle">{_clock(mid)}</text>'
                f'<text x="{W - RIGHT}" y="{height - 3}" text-anchor="end">{_clock(frame.t1)}</text>'
                f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W - RIGHT}" y2="{bottom}"/>')
    return (f'<svg class="chart strips" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(label)}" '
            f'>{"".join(body)}</svg>')


def _runs(states: Sequence[tuple[float, bool | None]], step: float) -> list[tuple[float, float, bool]]:
    """Consecutive intervals in the same state as one (start, end, up); unknown ones end a run."""
    runs: list[tuple[float, float, bool]] = []
    for t, up in sorted(states, key=lambda s: s[0]):
        if up is None:
            continue
        if runs and runs[-1][2] == up and runs[-1][1] >= t:
            runs[-1] = (runs[-1][0], t + step, up)
        else:
            runs.append((t, t + step, up))
    return runs
