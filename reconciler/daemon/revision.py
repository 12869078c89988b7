"""Which version of the file is in force: path, content hash, git commit."""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Revision:
    path: str
    sha256: str
    git_commit: str | None   # the last commit that touched the file, if it is in a git repo
    git_dirty: bool          # the file differs from that commit
    loaded_at: float

    def same_content(self, content: bytes) -> bool:
        return hashlib.sha256(content).hexdigest() == self.sha256

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def revision_of(path: Path, content: bytes) -> Revision:
    folder = path.resolve().parent
    commit = _git(folder, "log", "-1", "--format=%H", "--", path.name) or None
    dirty = bool(commit) and bool(_git(folder, "status", "--porcelain", "--", path.name))
    return Revision(str(path), hashlib.sha256(content).hexdigest(), commit, dirty, time.time())
