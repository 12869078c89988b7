"""sha256 of big local files (GGUF files, copied blobs), once per file per process, off the loop."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from reconciler.errors import PermanentError

CHUNK = 1 << 20

# ---------------------------------------------------------------- GGUF hashing, once per file

_hashes: dict[tuple[str, int, int], str] = {}
_hash_locks: dict[tuple[str, int], asyncio.Lock] = {}   # per file and event loop


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


async def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process (per path, size and mtime), off the loop."""
    try:
        st = path.stat()
    except OSError as exc:
        raise PermanentError(f"cannot read the GGUF file {path}: {exc.strerror}") from exc
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    lock = _hash_locks.setdefault((cache_key[0], id(asyncio.get_running_loop())), asyncio.Lock())
    async with lock:
        if cache_key not in _hashes:
            _hashes[cache_key] = await asyncio.to_thread(_hash_file, path)
        return _hashes[cache_key]
