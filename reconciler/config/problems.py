"""Problem: one thing wrong with the file, said as `FILE: toml.path: what is wrong (hint)`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.plan.changes import render_path


@dataclass(frozen=True)
class Problem:
    file: str
    path: tuple[str | int, ...]
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{render_path(self.path)}: " if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}: {where}{self.message}{hint}"


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc` (for "did you mean")."""
    from typing import get_args, get_origin

    current: Any = root
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        # unwrap X | None
        args = [a for a in get_args(current) if a is not type(None)]
        if get_origin(current) not in (list, dict) and args:
            current = args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_TEXT = {
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected an array",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def from_validation_error(file: str, root: type[BaseModel], error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        value = item.get("input")
        hint = ""
        if kind == "extra_forbidden":
            message = "unknown key"
            owner = _model_at(root, loc)
            if owner is not None:
                hint = did_you_mean(str(loc[-1]), _keys_of(owner))
        elif kind == "missing":
            message = "required key is missing"
        elif kind in _TEXT:
            message = f"{_TEXT[kind]}, got {show_value(value)}"
        elif kind == "literal_error":
            message = f"expected {item['ctx']['expected']}, got {show_value(value)}"
        elif kind in ("greater_than_equal", "greater_than"):
            limit = item["ctx"].get("ge", item["ctx"].get("gt"))
            message = f"expected at least {limit}, got {show_value(value)}"
        elif kind == "string_too_short":
            message = "must not be empty"
        elif kind == "string_pattern_mismatch":
            message = f"expected a sha256 digest (64 hex digits), got {show_value(value)}"
        else:
            message = item["msg"]
        problems.append(Problem(file, loc, message, hint))
    return problems
