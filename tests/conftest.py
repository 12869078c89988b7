"""Every test talks to 127.0.0.1 only: no proxy from the caller's environment may carry that
traffic (or a test's credentials) anywhere else. Done at import, before any client exists."""

from __future__ import annotations

import os

import pytest

for _name in list(os.environ):
    if _name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
        del os.environ[_name]
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = "127.0.0.1,localhost"


@pytest.fixture(autouse=True)
def _no_secrets_of_earlier_tests() -> None:
    """Secrets a test substituted are scrubbed process-wide: none may leak into the next test."""
    from reconciler.scrub import forget_all
    forget_all()
