"""End-of-stream detection, fed in arbitrary chunk splits."""
from __future__ import annotations

import pytest

from balancer.framing import EndChecker

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

CHAT_OK = (b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
           b'{"model":"m","message":{"role":"assistant","content":""},"done":true,'
           b'"done_reason":"stop","total_duration":1}\n')
CHAT_ERROR = (b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
              b'{"error":"an error was encountered while running the model: unexpected EOF"}\n')
CHAT_CUT = CHAT_OK[:90]
CHAT_TEXT_MENTIONS_DONE = (b'{"message":{"content":"say \\"done\\":true"},"done":false}\n')
OPENAI_OK = (b'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"x"}}]}\n\n'
             b'data: [DONE]\n\n')
OPENAI_CUT = b'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"x"}}]}\n\n'
RESPONSES_OK = (b'event: response.output_text.delta\ndata: {"type":"x"}\n\n'
                b'event: response.completed\ndata: {"type":"response.completed"}\n\n')
ANTHROPIC_OK = b'event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n'


def feed_split(checker: EndChecker, data: bytes, size: int) -> bool:
    for i in range(0, len(data), size):
        checker.feed(data[i:i + size])
    return checker.complete


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
@pytest.mark.parametrize("framing,ctype,data,complete", [
    ("ndjson", NDJSON, CHAT_OK, True),
    ("ndjson", NDJSON, CHAT_ERROR, False),
    ("ndjson", NDJSON, CHAT_CUT, False),
    ("ndjson", NDJSON, CHAT_TEXT_MENTIONS_DONE, False),
    ("ndjson", "application/json; charset=utf-8", b'{"error":"model not found"}', True),
    ("openai", SSE, OPENAI_OK, True),
    ("openai", SSE, OPENAI_CUT, False),
    ("openai", "application/json", b'{"id":"x"}\n', True),
    ("responses", SSE, RESPONSES_OK, True),
    ("responses", SSE, RESPONSES_OK[:40], False),
    ("anthropic", SSE, ANTHROPIC_OK, True),
    ("anthropic", SSE, ANTHROPIC_OK[:30], False),
    ("none", NDJSON, b"", True),
])
def test_end_marker(framing: str, ctype: str, data: bytes, complete: bool, size: int) -> None:
    assert feed_split(EndChecker(framing, ctype), data, size) is complete  # type: ignore[arg-type]


def test_crlf_sse_lines() -> None:
    checker = EndChecker("openai", SSE)
    checker.feed(b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n")
    assert checker.complete
