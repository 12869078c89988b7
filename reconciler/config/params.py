"""Ollama's model parameters: names, types and ranges, checked before anything is sent.

Ollama stores whatever it is given and then fails every request to that model, so a wrong
type or range must be caught in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    kind: str                    # "int", "float", "bool", "strings"
    low: float | None = None
    high: float | None = None
    load_time: bool = False      # changing it reloads the runner


PARAMS: dict[str, Param] = {
    "num_ctx": Param("int", 4, None, True),
    "num_batch": Param("int", 1, None, True),
    "num_gpu": Param("int", -1, None, True),
    "main_gpu": Param("int", 0, None, True),
    "use_mmap": Param("bool", load_time=True),
    "num_thread": Param("int", 0, None, True),
    "num_keep": Param("int", -1, None),
    "seed": Param("int"),
    "num_predict": Param("int", -2, None),
    "top_k": Param("int", 0, None),
    "top_p": Param("float", 0, 1),
    "min_p": Param("float", 0, 1),
    "typical_p": Param("float", 0, 1),
    "repeat_last_n": Param("int", -1, None),
    "temperature": Param("float", 0, 100),
    "repeat_penalty": Param("float", 0, 100),
    "presence_penalty": Param("float", -100, 100),
    "frequency_penalty": Param("float", -100, 100),
    "stop": Param("strings"),
}

INT_PARAMS = frozenset(k for k, p in PARAMS.items() if p.kind == "int")


def _describe(p: Param) -> str:
    noun = {"int": "an integer", "float": "a number", "bool": "true or false", "strings": "a list of strings"}[p.kind]
    if p.kind == "int" and p.low == 1 and p.high is None:
        return "a positive integer"
    if p.low is not None and p.high is not None:
        return f"{noun} from {p.low:g} to {p.high:g}"
    if p.low is not None:
        return f"{noun} of at least {p.low:g}"
    return noun


def check_param(name: str, value: Any) -> str | None:
    """None when `value` suits Ollama's parameter `name`, else what is wrong (no key in it)."""
    p = PARAMS[name]
    want = _describe(p)
    if name == "num_ctx":
        want = "a positive integer (at least 4)"
    got = f"got {value!r}" if not isinstance(value, str) else f'got "{value}"'
    if p.kind == "strings":
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else f"expected {want}, {got}"
    if p.kind == "bool":
        return None if isinstance(value, bool) else f"expected {want}, {got}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected {want}, {got}"
    if p.kind == "int" and not isinstance(value, int):
        return f"expected {want}, {got}"
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        return f"expected {want}, {got}"
    return None
