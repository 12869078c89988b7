"""Ollama model names: [host/][namespace/]model[:tag], shown "shortest"."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NS = "library"
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_NS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """Display form: default host and namespace dropped, tag always present."""
        if self.host.lower() == DEFAULT_HOST:
            if self.namespace.lower() == DEFAULT_NS:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> str:
        return self.short.lower()

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def is_default_registry(self) -> bool:
        return self.host.lower() == DEFAULT_HOST


def parse_name(text: str) -> ModelName | None:
    """Parse a model name; None when Ollama would call it invalid."""
    if not isinstance(text, str) or not text:
        return None
    parts = text.split("/")
    last = parts[-1]
    tag = "latest"
    if ":" in last:
        last, tag = last.rsplit(":", 1)
    host, ns = DEFAULT_HOST, DEFAULT_NS
    if len(parts) == 2:
        ns = parts[0]
    elif len(parts) == 3:
        host, ns = parts[0], parts[1]
    elif len(parts) > 3:
        return None
    if not (_HOST.fullmatch(host) and _NS.fullmatch(ns) and _PART.fullmatch(last)
            and _PART.fullmatch(tag)):
        return None
    return ModelName(host, ns, last, tag)
