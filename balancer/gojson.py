"""A request body read the way Ollama reads it: Go's encoding/json into a struct.

Go matches an object's keys to a struct's fields case-insensitively ("Model", "MODEL" and
"model" are one field; so are "K" with the Kelvin sign and "ſ" spelled keys), and when a
field comes twice the later one wins; a map or struct given twice is merged, the later keys
winning. Python's json keeps "Model" beside "model" and the last "options" alone, so a client
could send the balancer one value and Ollama another: every body the balancer looks into is
decoded here, and forwarded re-encoded with one key per field whenever its top level was not
canonical already. The balancer reads what the node will read, and enforces what it runs.
Only the top level is a struct whose fields matter to the balancer (model, options,
keep_alive, the /v1 sampling fields); `options` is a map in Go, whose keys stay exact.
"""
from __future__ import annotations

import json
from typing import Any

# Go's encoding/json refuses deeper nesting; Python's decoder stops near its recursion limit
MAX_DEPTH = 10000


class BadJson(ValueError):
    """A body that can be decoded by neither side the same way: answered 400."""


def field_name(key: str) -> str:
    """The name of the struct field a key matches, as the (lower-case) JSON tag spells it."""
    if key.isascii():
        return key.lower()
    out = []
    for c in key:
        f = c.casefold()
        out.append(f if len(f) == 1 else c)
    return "".join(out)


def _merge(before: Any, after: Any) -> Any:
    if isinstance(before, dict) and isinstance(after, dict):
        return {**before, **after}  # Go keeps the map (or struct) and sets the later keys
    if after is None and before is not None and not isinstance(before, (dict, list)):
        return before  # null into a string, number or bool field changes nothing in Go
    return after


def decode(body: bytes) -> tuple[Any, bool]:
    """(the decoded value, whether it must be re-encoded to be read the same by Go).
    Raises BadJson for a body nested too deeply; ValueError for one that is not JSON."""
    top: list[tuple[str, Any]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal top
        top = pairs  # the outermost object is the last one completed
        return dict(pairs)

    try:
        data = json.loads(body, object_pairs_hook=pairs_hook)
    except RecursionError:
        raise BadJson("the request body's JSON is nested too deeply") from None
    if not isinstance(data, dict) or len(data) == len(top) and all(
            k.isascii() and k == k.lower() for k in data):
        return data, False  # the common case: lower-case ASCII keys, none twice
    canonical: dict[str, Any] = {}
    for key, value in top:
        name = field_name(key)
        canonical[name] = _merge(canonical[name], value) if name in canonical else value
    return canonical, True


def encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
