"""The errors ollafleet raises, in one tree.

    OllafleetError
    ├─ ConfigError (.problems)         the file is unusable: exit 1, the daemon keeps the last good state
    └─ TargetError (.target)
       ├─ TemporaryError (.retry_after) retried by the next pass; an unreachable server is one
       └─ PermanentError                retrying will not help (invalid parameter, unknown model)

Messages never contain a secret value: they name the environment variable instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.config.problems import Problem


class OllafleetError(Exception):
    """Root of every error ollafleet raises on purpose."""


class ConfigError(OllafleetError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TargetError(OllafleetError):
    def __init__(self, message: str, *, target: str = "") -> None:
        self.target = target
        super().__init__(message)


class TemporaryError(TargetError):
    def __init__(self, message: str, *, target: str = "", retry_after: float = 0.0) -> None:
        self.retry_after = retry_after
        super().__init__(message, target=target)


class PermanentError(TargetError):
    pass
