"""The one rule by which ollafleet calls a declared value and a server's value the same.

Booleans are never numbers (True is not 1); numbers are equal as values, within a relative
1e-6, since servers print floats their own way (Ollama shows 1e+06 for 1000000, Open WebUI
stores 1 for 1.0); a URL equals itself with or without a trailing slash; lists and tables
compare item by item.
"""

from __future__ import annotations

import math
from typing import Any


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        return a == b or (a.startswith("http") and a.rstrip("/") == b.rstrip("/"))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)
