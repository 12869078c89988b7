"""The status page never shows a URL's user:password, also once the scrubber has replaced the
password with [REDACTED] (which no URL parser accepts)."""

from __future__ import annotations

import pytest

from reconciler.daemon.page import _no_userinfo


@pytest.mark.parametrize("url, shown", [
    ("http://10.0.0.5:11434", "http://10.0.0.5:11434"),
    ("http://admin:s3cret@10.0.0.5:11434/x", "http://10.0.0.5:11434/x"),
    ("http://admin:[REDACTED]@gpu-1:11434", "http://gpu-1:11434"),
    ("https://user@host/path?a=b@c", "https://host/path?a=b@c"),
    ("http://host/a@b", "http://host/a@b"),
])
def test_userinfo_is_left_out(url: str, shown: str) -> None:
    assert _no_userinfo(url) == shown
