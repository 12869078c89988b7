"""Open WebUI as a target, one folder: client.py (the only I/O with it), diff.py (the file
projected onto it, what it holds, the changes), target.py (OpenWebUITarget)."""

from reconciler.targets.openwebui.target import Credentials, OpenWebUITarget, openwebui_targets

__all__ = ["Credentials", "OpenWebUITarget", "openwebui_targets"]
