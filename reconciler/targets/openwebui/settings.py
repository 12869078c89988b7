"""Every Open WebUI setting ollafleet manages, declared once: where it is in the file, where Open
WebUI keeps it, how the file's value is read and how a live value goes back into a file.

The diff (wanted_for), the importer and the reader loop over SETTINGS; adding a setting is a
field of `OpenWebUI` in reconciler/config/schema.py plus one row here (a test checks both agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from balancer.classify import listed_name
from balancer.tasks import KINDS

from reconciler.config.schema import DesiredState

ROLES = ("pending", "user", "admin")
ENGINES = ("pyodide", "jupyter")
# the [openwebui] keys that say how to reach and sign in, not what to set
CONNECTION_KEYS = frozenset({"url", "api_key", "admin_email", "admin_password", "admin_name"})


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _one_of(*allowed: str) -> Callable[[Any], Any]:
    return lambda value: value if value in allowed else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _urls(value: Any) -> list[str] | None:
    return [str(u).rstrip("/") for u in value] if isinstance(value, list) else None


def _never(value: Any) -> None:
    return None


def _task_switch(kind: str) -> Callable[[DesiredState], Any]:
    def declared(state: DesiredState) -> Any:
        tasks = _ow(state).tasks
        return getattr(tasks, kind) if tasks is not None else None
    return declared


@dataclass(frozen=True)
class Setting:
    path: str                                   # the file's key under [openwebui] (a dot: a sub-table), and
                                                # the plan's path under "settings."
    group: str                                  # which settings object of Open WebUI holds it (client.GROUPS)
    key: str                                    # the field in that object
    declared: Callable[[DesiredState], Any]     # the file's value; None: not declared, left as it is
    to_file: Callable[[Any], Any] = _bool       # a live value as the file writes it; None: the file cannot
    in_file: bool = True                        # False: fixed by ollafleet, no key in the file


def _ow(state: DesiredState) -> Any:
    assert state.openwebui is not None
    return state.openwebui


SETTINGS = (
    Setting("task_model", "task", "TASK_MODEL", lambda s: _ow(s).task_model and listed_name(_ow(s).task_model), _text),
    Setting("code_interpreter", "code", "ENABLE_CODE_INTERPRETER", lambda s: _ow(s).code_interpreter),
    Setting("code_execution.enabled", "code", "ENABLE_CODE_EXECUTION",
            lambda s: _ow(s).code_execution.enabled if _ow(s).code_execution else None),
    Setting("code_execution.engine", "code", "CODE_EXECUTION_ENGINE",
            lambda s: _ow(s).code_execution.engine if _ow(s).code_execution else None, _one_of(*ENGINES)),
    Setting("default_user_role", "auth", "DEFAULT_USER_ROLE", lambda s: _ow(s).default_user_role, _one_of(*ROLES)),
    Setting("enable_signup", "auth", "ENABLE_SIGNUP", lambda s: _ow(s).enable_signup),
    Setting("enable_api_keys", "auth", "ENABLE_API_KEYS", lambda s: _ow(s).enable_api_keys),
    # always on: the file's models reach Open WebUI through it
    Setting("ollama_api", "ollama", "ENABLE_OLLAMA_API", lambda s: True, _never, in_file=False),
    Setting("ollama_urls", "ollama", "OLLAMA_BASE_URLS",
            lambda s: list(_ow(s).ollama_urls) if _ow(s).ollama_urls is not None else [s.balancer_public_url()],
            _urls),
    Setting("openai_api", "openai", "ENABLE_OPENAI_API", lambda s: _ow(s).openai_api),
    *(Setting(f"tasks.{kind}", "task", switch, _task_switch(kind)) for kind, (switch, _, _) in KINDS.items()),
)
SETTING = {s.path: s for s in SETTINGS}
GROUPS = tuple(sorted({s.group for s in SETTINGS}))


def missing_rows(schema: type[BaseModel]) -> list[str]:
    """The settings fields of the schema's [openwebui] table that no row declares, and the rows
    whose file key the schema lacks: both must be empty."""
    fields = set(schema.model_fields) - CONNECTION_KEYS
    rows = {s.path.split(".")[0] for s in SETTINGS if s.in_file}
    return sorted(fields ^ rows)


def live(groups: dict[str, dict[str, Any]], path: str) -> Any:
    """The value Open WebUI holds for one setting, as read (None: absent)."""
    s = SETTING[path]
    return (groups.get(s.group) or {}).get(s.key)


def file_fragment(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The inverse projection: what Open WebUI holds, as [openwebui] keys of a file (sub-tables
    nested); a value the file cannot hold is left out."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = s.to_file(live(groups, s.path))
        if value is None:
            continue
        *parents, last = s.path.split(".")
        table = out
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
    return out
