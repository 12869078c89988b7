"""Read desired_state.toml: bytes → TOML → ${ENV} → DesiredState, or every problem found."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from reconciler.config.checks import check
from reconciler.config.problems import Problem, from_validation_error
from reconciler.config.schema import DesiredState
from reconciler.errors import ConfigError

_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_text(text: str, file: str = "desired_state.toml", *,
              env: Mapping[str, str] | None = None, skip_env: bool = False) -> DesiredState:
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
        if not skip_env:
            problems += _checks_without_env(file, data, context)
        raise ConfigError(problems) from None
    problems = check(file, state)
    if problems:
        raise ConfigError(problems)
    return state


def _checks_without_env(file: str, data: dict[str, object], context: dict[str, object]) -> list[Problem]:
    """The file-wide checks, when the only thing the schema refused is an unset ${VAR}: one
    missing variable must not hide the file's other problems."""
    try:
        state = DesiredState.model_validate(data, context={**context, "skip_env": True})
    except ValidationError:
        return []   # the schema's own problems were all reported already
    return check(file, state)


def load(path: str | Path, *, env: Mapping[str, str] | None = None, skip_env: bool = False) -> DesiredState:
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
    return load_bytes(raw, path, env=env, skip_env=skip_env)


def load_bytes(raw: bytes, path: str | Path, *, env: Mapping[str, str] | None = None,
               skip_env: bool = False) -> DesiredState:
    """Check the bytes of the file at `path` (already read: the daemon hashes the same bytes)."""
    file = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, (), f"not UTF-8 text (bad byte at line {line}); save the file as UTF-8")]) from None
    state = load_text(text, file, env=env, skip_env=skip_env)
    state._base_dir = Path(path).resolve().parent
    return state
