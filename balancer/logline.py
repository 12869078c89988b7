"""One log record, one line: control characters in a message are shown escaped.

A node's error text, a model name or a header a client chose can hold a newline (or an escape
sequence for the terminal); written as is, it would start a line that looks like the daemon's
own. Every text formatter of the balancer and the daemon is a LineFormatter; tracebacks stay
multi-line, they are the formatter's, not a sender's.
"""
from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escaped(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def one_line(text: str) -> str:
    return _CONTROL.sub(_escaped, text) if _CONTROL.search(text) else text


class LineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)
