"""One scrubber for every output: each secret value ollafleet holds is replaced by [REDACTED].

Secrets register themselves when they come into the process: every `${VARIABLE}` substituted
into the file (api_key, admin e-mail and password) and every session token an Open WebUI hands
out. A server that echoes a credential back (an Authorization header in an error `detail`)
then cannot make plan/apply output, a log line (text or JSON) or /status show it.

    remember(value)        # at the point a secret enters the process
    scrub(text)            # text with every remembered value replaced
    scrub_data(obj)        # the same through dicts, lists and tuples (for JSON)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_values: tuple[str, ...] = ()     # longest first, so a secret containing another goes whole


MIN_LENGTH = 4   # a shorter "secret" would garble every line, and hides nothing worth hiding


def remember(value: str) -> None:
    """Scrub `value` from every output from now on."""
    global _values
    if len(value) < MIN_LENGTH:
        return
    with _lock:
        if value not in _values:
            _values = tuple(sorted({*_values, value}, key=len, reverse=True))


def scrub(text: str) -> str:
    for value in _values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def scrub_data(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {scrub_data(k): scrub_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_data(v) for v in obj]
    return obj


def forget_all() -> None:
    """For tests: start again with nothing to hide."""
    global _values
    with _lock:
        _values = ()


class ScrubbingFormatter(logging.Formatter):
    """A log formatter whose every line (message and traceback) is scrubbed."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))
