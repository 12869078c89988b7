"""One module per kind of server ollafleet reconciles; build_targets joins them for a file."""

from __future__ import annotations

from reconciler.config.schema import DesiredState
from reconciler.targets.base import AnyTarget, Disruption, Observed, Progress, Target

__all__ = ["AnyTarget", "Disruption", "Observed", "Progress", "Target", "build_targets"]


def build_targets(state: DesiredState) -> list[AnyTarget]:
    """Every target the file declares: one per Ollama node, then Open WebUI if configured."""
    from reconciler.targets.ollama import node_targets
    from reconciler.targets.openwebui import openwebui_targets

    return [*node_targets(state), *openwebui_targets(state)]
