"""Pure incremental end-of-stream checkers.

A stream is complete only when its protocol says so: NDJSON needs a line with
"done": true, OpenAI SSE needs `data: [DONE]`, /v1/responses needs a
`response.completed` event and Anthropic SSE a `message_stop` event. A stream that
ends without it (node died, error line, cut connection) is a failure of the node.
"""
from __future__ import annotations

import json
import re

from .classify import Framing

WHOLE_MAX = 4 * 2**20  # bytes of a non-streamed answer kept to read its timings
_DONE_TRUE = re.compile(rb'"done"\s*:\s*true')
_SSE_ENDS: dict[str, tuple[bytes, ...]] = {
    "openai": (b"data: [DONE]", b"data:[DONE]"),
    "responses": (b"event: response.completed", b"event:response.completed"),
    "anthropic": (b"event: message_stop", b"event:message_stop"),
}


class EndChecker:
    """Feed response chunks in order; `complete` tells whether the end marker was seen."""

    __slots__ = ("framing", "complete", "final", "_tail", "_body")

    def __init__(self, framing: Framing, content_type: str = "", answer: bool = False) -> None:
        """`answer`: the request asked a model (inference), so a JSON body is its answer."""
        ctype = content_type.split(";", 1)[0].strip().lower()
        # A non-streaming answer (JSON body, an error) carries no end marker.
        # A JSON answer to a chat request ("stream": false) is kept whole, up to WHOLE_MAX,
        # so that its timings (or usage) are learned like a stream's last chunk.
        whole = answer and ctype == "application/json"
        if framing == "ndjson" and ctype != "application/x-ndjson":
            framing = "none"
        elif framing in _SSE_ENDS and ctype != "text/event-stream":
            framing = "none"
        self._body: bytearray | None = bytearray() if whole else None
        self.framing: Framing = framing
        self.complete = framing == "none"
        # Ollama's timings from the "done" line; for /v1 and Anthropic streams only the
        # answer's length, from their usage ({"eval_count": n})
        self.final: dict[str, object] | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if self._body is not None and chunk:
            self._whole(chunk)
        if self.framing == "none" or not chunk:
            return
        data = self._tail + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            return
        lines, self._tail = data[: cut + 1], data[cut + 1:]
        if self.framing == "ndjson":
            self._feed_ndjson(lines)
        else:
            self._feed_sse(lines)

    def _whole(self, chunk: bytes) -> None:
        """A non-streamed answer: parse it once it is a whole JSON object."""
        assert self._body is not None
        self._body += chunk
        if len(self._body) > WHOLE_MAX:
            self._body = None  # too large to keep for a few numbers
            return
        if not self._body.rstrip().endswith(b"}"):
            return  # not all of it yet (spares a parse per chunk of a long answer)
        try:
            obj = json.loads(self._body)
        except ValueError:
            return  # not all of it yet
        self._body = None
        if not isinstance(obj, dict) or "error" in obj:
            return
        if obj.get("done") is True:  # Ollama's native answer: the timings are in it
            self.final = {k: v for k, v in obj.items() if k not in ("message", "response",
                                                                    "context")}
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):  # /v1, Anthropic: only the answer's length
            count = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(count, int) and count > 0:
                # all of it came at once: no generation time can be read from our clock
                self.final = {"eval_count": count, "streamed": False}

    def _feed_ndjson(self, lines: bytes) -> None:
        if _DONE_TRUE.search(lines) is None:
            return
        for line in lines.splitlines():
            if _DONE_TRUE.search(line) is None:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("done") is True and "error" not in obj:
                self.complete = True
                self.final = obj

    def _feed_sse(self, lines: bytes) -> None:
        if b'"usage"' in lines:
            self._usage(lines)
        markers = _SSE_ENDS[self.framing]
        if not any(m in lines for m in markers):
            return
        for line in lines.splitlines():
            if line.rstrip(b"\r") in markers:
                self.complete = True

    def _usage(self, lines: bytes) -> None:
        """The answer's token count from an SSE usage object (OpenAI's last chunk with
        stream_options.include_usage, Responses' response.completed, Anthropic's message_delta)."""
        for line in lines.splitlines():
            if b'"usage"' not in line or not line.startswith(b"data:"):
                continue
            try:
                obj = json.loads(line[5:])
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            usage = obj.get("usage")
            if not isinstance(usage, dict) and isinstance(obj.get("response"), dict):
                usage = obj["response"].get("usage")
            if isinstance(usage, dict):
                count = usage.get("completion_tokens", usage.get("output_tokens"))
                if isinstance(count, int) and count > 0:
                    self.final = {"eval_count": count}
