"""One scrubber for every output: each secret value ollafleet holds is replaced by [REDACTED].

Secrets register themselves when they come into the process: every `${VARIABLE}` substituted
into the file (api_key, admin e-mail and password) and every session token an Open WebUI hands
out. A server that echoes a credential back (an Authorization header in an error `detail`)
then cannot make plan/apply output, a log line (text or JSON) or /status show it.

    remember(value)        # at the point a secret enters the process
    scrub(text)            # text with every remembered value replaced
    scrub_data(obj)        # the same through dicts, lists and tuples (for JSON)
    cut(text, n)           # scrubbed first, then cut to n characters: never a secret's prefix

A value is also found in the forms a server echoes it in: JSON-escaped (a `"` or `\\` in a
password), URL-encoded, or both. Whatever was remembered or not, a URL's credentials are
scrubbed too: the `user:password@` part, and the value of a query parameter whose name says
it is one (`?token=`, `key=`, `password=`, `secret=`, `sig=`, ...), so a password written
literally in a node's URL is never shown either.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_values: tuple[str, ...] = ()     # longest first, so a secret containing another goes whole


MIN_LENGTH = 4   # a shorter "secret" would garble every line, and hides nothing worth hiding


# scheme://user:password@host: the whole user-info goes
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]+@")
# ?token=..., &api_key=..., ;password=...: the value goes, the name stays
_QUERY = re.compile(r"(?i)([?&;][a-z0-9_.-]*(?:token|key|secret|pass|pwd|auth|sig|credential|session)"
                    r"[a-z0-9_.-]*=)[^&#;\s\"'<>]+")


def _forms(value: str) -> set[str]:
    """The value as written, JSON-escaped (once and twice), URL-encoded, and both."""
    forms = {value}
    for form in list(forms):
        forms.add(json.dumps(form)[1:-1])
        forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
    for form in list(forms):
        forms.add(json.dumps(form)[1:-1])
    for form in list(forms):
        forms.update((quote(form, safe=""), quote(form), quote_plus(form)))
    for form in list(forms):      # %2f and %2F alike
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form))
    return {f for f in forms if len(f) >= MIN_LENGTH}


def remember(value: str) -> None:
    """Scrub `value` (and its escaped forms) from every output from now on."""
    global _values
    if len(value) < MIN_LENGTH:
        return
    with _lock:
        if value not in _values:
            _values = tuple(sorted({*_values, *_forms(value)}, key=len, reverse=True))


def scrub(text: str) -> str:
    for value in _values:
        if value in text:
            text = text.replace(value, REDACTED)
    if "=" in text:
        text = _QUERY.sub(r"\1" + REDACTED, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return text


def cut(text: str, limit: int) -> str:
    """`text` scrubbed, then at most `limit` characters: a cut never leaves a secret's prefix."""
    return scrub(text)[:limit]


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
