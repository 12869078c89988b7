"""ollafleet's reconciler: desired_state.toml → plan of changes → applied to Ollama and Open WebUI."""

from reconciler.config import DesiredState, Problem, load, load_text
from reconciler.errors import ConfigError, OllafleetError, PermanentError, TargetError, TemporaryError
from reconciler.plan.changes import Action, Change, ChangeResult, PassReport, Plan, Status

__all__ = [
    "Action", "Change", "ChangeResult", "ConfigError", "DesiredState", "OllafleetError", "PassReport",
    "PermanentError", "Plan", "Problem", "Status", "TargetError", "TemporaryError", "load", "load_text",
]
