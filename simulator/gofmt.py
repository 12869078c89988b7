"""Go formatting rules the real server follows: JSON bytes, %g floats, times, durations."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

FOREVER_NS = 2**63 - 1  # Go's math.MaxInt64 duration, "keep loaded forever"


def go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def go_g(x: float) -> str:
    """Go's %v / %#v of a float64 (shortest repr, exponent from 1e+06 / below 1e-04)."""
    x = float(x)
    if x == 0:
        return "0"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    dp = len(digits) + exp
    e = dp - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:
        m = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{m}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if dp <= 0:
        return f"{s}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{s}{ds}{'0' * (dp - len(ds))}"
    return f"{s}{ds[:dp]}.{ds[dp:]}"


def go_quote(s: str) -> str:
    """strconv.Quote for the common cases (JSON-compatible for ASCII)."""
    return json.dumps(s, ensure_ascii=False)


def go_value(v: Any, *, quote_strings: bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return go_g(v)
    if isinstance(v, str):
        return go_quote(v) if quote_strings else v
    if v is None:
        return "<nil>"
    return json.dumps(v)


def format_parameters(params: dict[str, Any]) -> str:
    """The /api/show `parameters` text: `%-30s %#v` per value, one line per list element."""
    lines: list[str] = []
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            lines.append(f"{key:<30} {go_value(item, quote_strings=True)}")
    return "\n".join(lines)


def modelfile_value(v: Any) -> str:
    if isinstance(v, str) and ("\n" in v or v != v.strip()):
        return go_quote(v)
    return go_value(v, quote_strings=False)


def rfc3339nano(ns: int, *, utc: bool) -> str:
    """Go's time.RFC3339Nano: trailing zeros of the fraction trimmed, `Z` for a zero offset."""
    secs, frac = divmod(ns, 10**9)
    if utc:
        dt = datetime.fromtimestamp(secs, timezone.utc)
    else:
        dt = datetime.fromtimestamp(secs).astimezone()
    out = dt.strftime("%Y-%m-%dT%H:%M:%S")
    f = f"{frac:09d}".rstrip("0")
    if f:
        out += "." + f
    off = dt.utcoffset()
    if not off:
        return out + "Z"
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{out}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def now_utc() -> str:
    return rfc3339nano(time.time_ns(), utc=True)


_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
          "m": 60 * 10**9, "h": 3600 * 10**9}
_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_go_duration(text: str) -> int:
    """time.ParseDuration → nanoseconds, with Go's error texts."""
    orig = text
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.group(1) in ("", "."):
            if re.fullmatch(r"\d*\.?\d*", text[pos:]):
                raise DurationError(f'time: missing unit in duration "{orig}"')
            unit = re.match(r"\d*\.?\d*([^\d.]*)", text[pos:])
            if unit and unit.group(1) and m is None and re.match(r"\d", text[pos:]):
                raise DurationError(f'time: unknown unit "{unit.group(1)}" in duration "{orig}"')
            raise DurationError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * int(total)


def keep_alive_ns(value: Any) -> int | None:
    """api.Duration decoding: number = seconds, string = Go duration; negative = forever.

    Returns None when absent; raises DurationError (400) for bad strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DurationError("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, (int, float)):
        ns = int(value * 10**9)
    elif isinstance(value, str):
        ns = parse_go_duration(value)
    else:
        raise DurationError("Unsupported type: '" + type(value).__name__ + "'")
    return FOREVER_NS if ns < 0 or ns > FOREVER_NS else ns


def go_json_error(raw: bytes) -> str:
    """A Go-decoder-like message for a body Python cannot parse as JSON."""
    text = raw.decode("utf-8", "replace")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            return "unexpected EOF"
        ch = text[exc.pos]
        if exc.msg.startswith("Expecting value"):
            return f"invalid character '{ch}' looking for beginning of value"
        if "property name" in exc.msg:
            return f"invalid character '{ch}' looking for beginning of object key string"
        if "delimiter" in exc.msg:
            where = "object key" if exc.msg.startswith("Expecting ':'") else "object key:value pair"
            if "',' delimiter" in exc.msg and text.lstrip().startswith("["):
                where = "array element"
            return f"invalid character '{ch}' after {where}"
        if exc.msg.startswith("Extra data"):
            return f"invalid character '{ch}' after top-level value"
        return f"invalid character '{ch}' looking for beginning of value"
    return "unexpected EOF"


def go_type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"
