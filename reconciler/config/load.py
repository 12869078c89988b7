"""Read desired_state.toml: bytes → TOML → ${ENV} → DesiredState, or every problem found."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.config.checks import check
from reconciler.config.problems import Problem, from_validation_error
from reconciler.config.schema import DesiredState
from reconciler.errors import ConfigError

_AT = re.compile(r"\(at line (\d+), column (\d+)\)")

# more checks of a loaded state, run with the file-wide ones (validate: the local sources)
Extra = Callable[[str, DesiredState], list[Problem]]
Loc = tuple[str | int, ...]


def load_text(text: str, file: str = "desired_state.toml", *,
              env: Mapping[str, str] | None = None, skip_env: bool = False,
              extra: Extra | None = None, base_dir: Path | None = None) -> DesiredState:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _AT.search(message)
        what = _AT.sub("", message).strip().rstrip(".")
        where = f"line {match.group(1)}, column {match.group(2)}: " if match else ""
        raise ConfigError([Problem(file, (), f"TOML syntax error at {where}{what}")]) from None
    if not data:
        raise ConfigError([Problem(file, (), "the file is empty: it needs at least `version = 1`")])
    context = {"env": dict(os.environ if env is None else env), "skip_env": skip_env}
    try:
        state = DesiredState.model_validate(data, context=context)
    except ValidationError as exc:
        problems = from_validation_error(file, DesiredState, exc)
        problems += _checks_despite(file, data, context, base_dir, extra)
        raise ConfigError(problems) from None
    if base_dir is not None:
        state._base_dir = base_dir
    if state.cluster is not None:
        state.cluster._file_stem = Path(file).stem or "desired_state"
    problems = check(file, state) + (extra(file, state) if extra else [])
    if problems:
        raise ConfigError(problems)
    return state


def _checks_despite(file: str, data: dict[str, Any], context: dict[str, object], base_dir: Path | None,
                    extra: Extra | None) -> list[Problem]:
    """The file-wide checks of what the schema accepted: every problem of a file in one run.
    An unset ${VAR} is taken as set; a key the schema refused is left out (a table it needs
    whole, such as [openwebui] without its url, goes whole), and problems at or around a left
    out key are not said twice. When only a list entry could go, the rest waits for the next run
    (leaving it out would renumber the others)."""
    data = copy.deepcopy(data)
    dropped: list[Loc] = []
    for _ in range(20):
        try:
            state = DesiredState.model_validate(data, context={**context, "skip_env": True})
            break
        except ValidationError as exc:
            for item in exc.errors(include_url=False):
                loc = tuple(item["loc"])[:-1] if item["type"] == "missing" else tuple(item["loc"])
                if any(loc[:len(d)] == d for d in dropped):
                    continue          # gone already with a table around it
                if not _drop(data, loc):
                    return []
                dropped.append(loc)
    else:
        return []
    if base_dir is not None:
        state._base_dir = base_dir
    found = check(file, state) + (extra(file, state) if extra else [])
    return [p for p in found if not any(p.path[:len(d)] == d or d[:len(p.path)] == p.path for d in dropped)]


def _drop(data: dict[str, Any], loc: Loc) -> bool:
    """Remove the key at `loc`; False when it is a list entry (or the file itself)."""
    if not loc or not isinstance(loc[-1], str):
        return False
    parent: Any = data
    for part in loc[:-1]:
        if isinstance(parent, dict) and isinstance(part, str):
            parent = parent.get(part)
        elif isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
            parent = parent[part]
        else:
            return False
    if not isinstance(parent, dict) or loc[-1] not in parent:
        return False
    del parent[loc[-1]]
    return True


def load(path: str | Path, *, env: Mapping[str, str] | None = None, skip_env: bool = False,
         extra: Extra | None = None) -> DesiredState:
    """Load and check the file at `path`; raise ConfigError listing every problem."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(file, (), "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(file, (), "is a directory, expected a desired_state.toml file")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, (), f"cannot read: {exc.strerror}")]) from None
    return load_bytes(raw, path, env=env, skip_env=skip_env, extra=extra)


def load_bytes(raw: bytes, path: str | Path, *, env: Mapping[str, str] | None = None,
               skip_env: bool = False, extra: Extra | None = None) -> DesiredState:
    """Check the bytes of the file at `path` (already read: the daemon hashes the same bytes)."""
    file = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, (), f"not UTF-8 text (bad byte at line {line}); save the file as UTF-8")]) from None
    return load_text(text, file, env=env, skip_env=skip_env, extra=extra, base_dir=Path(path).resolve().parent)
