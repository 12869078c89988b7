"""Fault modes a node can be switched into at run time, and the stream writer that obeys them."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web


class Fault(str, Enum):
    NONE = "none"
    REFUSE = "refuse"  # nothing listens on the port
    NO_ANSWER = "no_answer"  # accept, read the request, never answer
    HANG_AFTER_HEADERS = "hang_after_headers"  # 200 + headers, then silence
    FAIL_MID_STREAM = "fail_mid_stream"  # {"error":…} line after N chunks, then EOF
    RST_MID_STREAM = "rst_mid_stream"  # TCP reset after N chunks
    FIN_MID_STREAM = "fin_mid_stream"  # clean close after N chunks (chunked body unterminated)
    SLOW_TOKENS = "slow_tokens"  # extra delay per generated token
    HTTP_500 = "http_500"
    HTTP_503_BUSY = "http_503_busy"
    MODEL_NOT_FOUND = "model_not_found"  # inference says the model is not there
    FREEZE = "freeze"  # paused VM: sockets stay open, nothing moves
    DISK_FULL = "disk_full"  # pulls fail with an error line


INFERENCE_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/v1/chat/completions",
                   "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses")
STREAM_PATHS = INFERENCE_PATHS + ("/api/pull", "/api/create", "/api/push")

DEFAULT_ERROR = "an error was encountered while running the model: unexpected EOF"
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"


@dataclass
class FaultState:
    fault: Fault = Fault.NONE
    after_chunks: int = 2
    delay: float = 0.5  # SLOW_TOKENS: extra seconds per token
    message: str = DEFAULT_ERROR
    paths: tuple[str, ...] | None = None  # None = the fault's default scope
    extra: dict[str, Any] = field(default_factory=dict)

    def applies(self, fault: Fault, path: str) -> bool:
        if self.fault is not fault:
            return False
        if self.paths is not None:
            return any(path.startswith(p) for p in self.paths)
        if fault in (Fault.REFUSE, Fault.NO_ANSWER, Fault.FREEZE):
            return True
        if fault is Fault.DISK_FULL:
            return path.startswith(("/api/pull", "/api/create"))
        scope = STREAM_PATHS if fault in _STREAM_FAULTS else INFERENCE_PATHS
        return any(path.startswith(p) for p in scope)


STREAM_FAULTS = _STREAM_FAULTS = (Fault.FAIL_MID_STREAM, Fault.RST_MID_STREAM,
                                  Fault.FIN_MID_STREAM)


class CutConnection(Exception):
    """Drop the connection of a non-streaming request (RST or FIN) without an answer."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.value)
        self.fault = fault


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close with SO_LINGER 0 so the peer gets a TCP RST."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()  # type: ignore[attr-defined]


class StreamCut(Exception):
    """The stream was cut on purpose by a fault; the generation stops."""

    def __init__(self, resp: web.StreamResponse) -> None:
        super().__init__("stream cut by a fault")
        self.resp = resp
