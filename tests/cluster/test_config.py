"""[cluster] in the file: optional, its secret from the environment, Redis only when used."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.config import load_text
from reconciler.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = 'version = 1\n[cluster]\nredis = "redis://127.0.0.1:6379/0"\n'


def test_cluster_reads_its_password_from_the_environment_and_never_shows_it() -> None:
    state = load_text(BASE + 'password = "${REDIS_PASSWORD}"\nname = "lb-1"\nlease = "5s"\n',
                      env={"REDIS_PASSWORD": "s3cret"})
    assert state.cluster is not None and state.cluster.password is not None
    assert state.cluster.password.value == "s3cret" and "s3cret" not in repr(state.cluster)
    assert state.cluster.lease == 5.0 and state.cluster.slot_lease == 10.0
    with pytest.raises(ConfigError, match="REDIS_PASSWORD is not set"):
        load_text(BASE + 'password = "${REDIS_PASSWORD}"\n', env={})


def test_without_cluster_the_daemon_never_imports_redis() -> None:
    code = ("import sys, reconciler.daemon.run, reconciler.cli, balancer.server; "
            "sys.exit('redis' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
