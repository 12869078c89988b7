"""Small value types of the file: durations, listen addresses, URLs, secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import PlainSerializer, PlainValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from reconciler.scrub import remember

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise PydanticCustomError("duration", 'expected a duration like "30s" or "2m", got {value}', {"value": value})
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise PydanticCustomError("duration", 'expected a duration like "30s" or "2m", got {value}', {"value": shown})
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(round(seconds * 1000))}ms"


Duration = Annotated[float, PlainValidator(parse_duration), PlainSerializer(format_duration)]


def parse_url(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("url", "expected a URL string, got {value}", {"value": repr(value)})
    parts = urlsplit(value)
    try:
        parts.port
    except ValueError:
        raise PydanticCustomError("url", 'expected a port number in the URL, got "{value}"', {"value": value}) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "url", 'expected an http:// or https:// URL with a host, got "{value}"', {"value": value})
    return value.rstrip("/")


Url = Annotated[str, PlainValidator(parse_url)]


def parse_listen(value: Any) -> str:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not isinstance(value, str) or not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise PydanticCustomError(
            "listen", 'expected "HOST:PORT" such as "0.0.0.0:11434", got {value}', {"value": f'"{value}"' if isinstance(value, str) else repr(value)})
    return value


Listen = Annotated[str, PlainValidator(parse_listen)]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Secret:
    """A value that came from an environment variable; only the variable's name is ever shown."""

    var: str
    value: str = field(repr=False, compare=False)

    def __str__(self) -> str:
        return "${" + self.var + "}"


def parse_secret(value: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    match = _ENV_REF.match(value) if isinstance(value, str) else None
    if not match:
        raise PydanticCustomError(
            "secret", 'secrets come from the environment: write "{example}" here, not the value',
            {"example": "${VARIABLE}"})
    var = match.group(1)
    context = info.context or {}
    env = context.get("env", {})
    if var not in env and not context.get("skip_env"):
        raise PydanticCustomError(
            "missing_secret", "environment variable {var} is not set (export it, or put it in the env file)",
            {"var": var})
    value = env.get(var, "")
    remember(value)       # from now on no output shows it
    return Secret(var, value)


SecretRef = Annotated[Secret, PlainValidator(parse_secret), PlainSerializer(str)]
