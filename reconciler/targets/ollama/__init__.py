"""The Ollama nodes as targets, one folder: client.py (the only I/O with a node), facts.py
(value types and pure parsers of its answers), diff.py (the file projected onto a node, and the
changes), folder.py (copied Ollama models folders), hashing.py, target.py (OllamaNode)."""

from reconciler.targets.ollama.hashing import file_sha256
from reconciler.targets.ollama.target import OllamaNode, node_targets

__all__ = ["OllamaNode", "file_sha256", "node_targets"]
