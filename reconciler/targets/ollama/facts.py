"""What an Ollama node's answers mean, pure: value types for /api/tags, /api/ps and /api/show,
the parsers of their text fields, the parameters as Ollama wants them on the wire, and the
reading of a management stream (pull, create). No I/O here: client.py does that."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from balancer.classify import normalize_model
from reconciler.config.params import INT_PARAMS, PARAMS

# ---------------------------------------------------------------- names

# one rule for the reconciler and the balancer, which must agree on what a node holds
model_key = normalize_model


# ---------------------------------------------------------------- parsed answers

@dataclass(frozen=True)
class TagEntry:
    name: str
    digest: str          # 64 hex, no "sha256:" prefix
    size: int = 0
    modified_at: str = ""


@dataclass(frozen=True)
class PsEntry:
    name: str
    digest: str
    expires_at: datetime | None = None
    size_vram: int = 0
    context_length: int = 0


@dataclass(frozen=True)
class ShowInfo:
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    system: str = ""
    parent_model: str = ""
    capabilities: tuple[str, ...] = ()
    weights: str = ""    # hex digest of the weights blob (from the modelfile's FROM line)


def parse_tags(data: Any) -> list[TagEntry]:
    """`GET /api/tags` → installed models."""
    out = []
    for m in (data or {}).get("models") or []:
        name = m.get("name") or m.get("model") or ""
        digest = str(m.get("digest") or "").removeprefix("sha256:")
        out.append(TagEntry(name, digest, int(m.get("size") or 0), str(m.get("modified_at") or "")))
    return out


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(text: str) -> datetime | None:
    """Go RFC3339Nano → aware datetime (nanoseconds cut to microseconds)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None


def parse_ps(data: Any) -> list[PsEntry]:
    """`GET /api/ps` → runners in memory."""
    out = []
    for m in (data or {}).get("models") or []:
        out.append(PsEntry(m.get("name") or m.get("model") or "",
                           str(m.get("digest") or "").removeprefix("sha256:"),
                           parse_time(str(m.get("expires_at") or "")),
                           int(m.get("size_vram") or 0), int(m.get("context_length") or 0)))
    return out


_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|[abfnrtv\\"\'])')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", '"': '"', "'": "'"}


def go_unquote(raw: str) -> str:
    """A Go %#v / strconv.Quote string literal → its text."""
    body = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        return _SIMPLE[e]

    return _GO_ESCAPE.sub(one, body)


def parse_value(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith('"'):
        return go_unquote(raw)
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


def parse_show_parameters(text: str) -> dict[str, Any]:
    """The `parameters` text of `/api/show` ("%-30s %#v" lines, random order, one line per
    list element) → {key: value}; numbers as float, list-typed parameters as lists."""
    out: dict[str, Any] = {}
    for line in (text or "").splitlines():
        bits = line.strip().split(None, 1)
        if len(bits) != 2:
            continue
        key, value = bits[0], parse_value(bits[1])
        if key in INT_PARAMS and isinstance(value, float) and value.is_integer():
            value = int(value)
        if PARAMS.get(key) is not None and PARAMS[key].kind == "strings":
            out.setdefault(key, []).append(value)
        elif key in out:
            old = out[key]
            out[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            out[key] = value
    return out


_FROM_BLOB = re.compile(r"^FROM\s+\S*sha256[-:]([0-9a-f]{64})\s*$", re.M)


def parse_show(data: Any) -> ShowInfo:
    """`POST /api/show` → what the reconciler compares."""
    data = data or {}
    details = data.get("details") or {}
    found = _FROM_BLOB.search(data.get("modelfile") or "")
    return ShowInfo(parse_show_parameters(data.get("parameters") or ""), data.get("template") or "",
                    data.get("system") or "", details.get("parent_model") or "",
                    tuple(data.get("capabilities") or ()), found.group(1) if found else "")


def to_wire(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as Ollama wants them in JSON: int-typed options as ints."""
    return {k: int(v) if k in INT_PARAMS and isinstance(v, float) and v.is_integer() else v
            for k, v in params.items()}


# ---------------------------------------------------------------- streams

@dataclass
class PullProgress:
    """Sums `completed`/`total` over distinct digests of a pull (or create-with-pull) stream."""

    totals: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    status: str = ""

    def feed(self, line: dict[str, Any]) -> None:
        self.status = str(line.get("status") or self.status)
        digest = line.get("digest")
        if digest and line.get("total"):
            self.totals[digest] = int(line["total"])
            self.done[digest] = max(self.done.get(digest, 0), int(line.get("completed") or 0))

    @property
    def completed(self) -> int:
        return sum(self.done.values())

    @property
    def total(self) -> int | None:
        return sum(self.totals.values()) or None


def stream_failure(lines: list[dict[str, Any]]) -> str | None:
    """None when an NDJSON management stream ended well, else Ollama's message. A stream
    fails on any line with "error", or when it ends without {"status":"success"} last."""
    for line in lines:
        if "error" in line:
            return str(line["error"])
    if not lines or lines[-1].get("status") != "success":
        last = lines[-1].get("status") if lines else None
        return f"the stream ended before success (last status: {last!r})" if last else "the stream ended without an answer"
    return None
