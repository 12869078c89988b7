"""A change's and an observation's payloads are typed: no field of Change or Observed is Any,
so renaming a field of a target's payload is a type error, not a silent change of behaviour."""

from __future__ import annotations

import typing
from typing import Any

from reconciler.plan.changes import Change
from reconciler.targets.base import Observed


def _mentions_any(hint: object, seen: set[int]) -> bool:
    if hint is Any:
        return True
    if id(hint) in seen:
        return False
    seen.add(id(hint))
    if isinstance(hint, typing.ForwardRef):
        return False
    return any(_mentions_any(arg, seen) for arg in typing.get_args(hint))


def test_no_field_of_change_or_observed_is_any() -> None:
    for cls in (Change, Observed):
        hints = typing.get_type_hints(cls)
        assert hints, cls
        loose = [name for name, hint in hints.items() if _mentions_any(hint, set())]
        assert loose == [], f"{cls.__name__} fields typed Any: {loose}"
