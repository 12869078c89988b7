"""The first bytes of a GGUF file: enough metadata for Ollama to tell weights, projector and adapter.

Ollama reads `general.architecture` and `general.type` from the header of every file given to
/api/create: "adapter" becomes an adapter layer, "projector"/"mmproj" (or a `clip` file) a
projector layer, anything else the model's weights. Tests write real headers and the simulator
reads them back, so the same bytes mean the same thing to both.
"""

from __future__ import annotations

import struct

MAGIC = b"GGUF"
_STRING = 8


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def header(architecture: str, kind: str = "model") -> bytes:
    """A GGUF v3 header with no tensors and two string keys."""
    kv = [("general.architecture", architecture), ("general.type", kind)]
    out = MAGIC + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv:
        out += _string(key) + struct.pack("<I", _STRING) + _string(value)
    return out


def read_kv(head: bytes) -> dict[str, str]:
    """The string keys at the start of a GGUF header ({} when it is not one, or cut short)."""
    if head[:4] != MAGIC or len(head) < 24:
        return {}
    _, _, count = struct.unpack_from("<IQQ", head, 4)
    out: dict[str, str] = {}
    at = 24
    try:
        for _ in range(min(count, 64)):
            (n,) = struct.unpack_from("<Q", head, at)
            key = head[at + 8:at + 8 + n].decode()
            at += 8 + n
            (typ,) = struct.unpack_from("<I", head, at)
            at += 4
            if typ != _STRING:
                break          # only string keys are written first by header()
            (n,) = struct.unpack_from("<Q", head, at)
            out[key] = head[at + 8:at + 8 + n].decode()
            at += 8 + n
    except (struct.error, UnicodeDecodeError):
        pass
    return out


def kind_of(head: bytes) -> str:
    """"model", "projector" or "adapter", as Ollama 0.13.5 decides it for a created layer."""
    kv = read_kv(head)
    kind = kv.get("general.type", "")
    if kind == "adapter":
        return "adapter"
    if kind in ("projector", "mmproj") or kv.get("general.architecture") == "clip":
        return "projector"
    return "model"
