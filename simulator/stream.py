"""The stream writer of a streaming answer: counts chunks and obeys the node's stream faults."""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from .faults import _STREAM_FAULTS, Fault, FaultState, StreamCut, reset_transport
from .node import SimNode


class StreamOut:
    """A chunked streaming response that counts chunks and applies the node's stream faults.

    `error_frame(message)` builds the bytes a failing stream ends with (None = nothing)."""

    def __init__(self, request: web.Request, node: SimNode, content_type: str,
                 error_frame: Callable[[str], bytes | None]) -> None:
        self.request = request
        self.node = node
        self.resp = web.StreamResponse(status=200)
        self.resp.headers["Content-Type"] = content_type
        self.error_frame = error_frame
        self.chunks = 0
        self.prepared = False

    async def prepare(self) -> None:
        if not self.prepared:
            self.prepared = True
            await self.resp.prepare(self.request)

    async def write(self, data: bytes) -> None:
        await self.node.thawed()
        await self.prepare()
        f = self.node.fault_state
        path = self.request.path
        if self.chunks >= f.after_chunks and f.fault in _STREAM_FAULTS and f.applies(f.fault, path):
            await self.cut(f)
        await self.resp.write(data)
        self.chunks += 1

    async def cut(self, f: FaultState) -> None:
        if f.fault is Fault.FAIL_MID_STREAM:
            frame = self.error_frame(f.message)
            if frame:
                await self.resp.write(frame)
            await self.resp.write_eof()  # the handler returns: a well-formed end, no done line
        elif f.fault is Fault.RST_MID_STREAM:
            reset_transport(self.request.transport)
        else:
            transport = self.request.transport
            if transport is not None:
                transport.close()
        raise StreamCut(self.resp)

    async def finish(self) -> web.StreamResponse:
        await self.prepare()
        await self.resp.write_eof()
        return self.resp
