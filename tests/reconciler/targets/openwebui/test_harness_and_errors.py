"""Failure modes that need no Open WebUI: the harness fails loudly, an unreachable server is a value."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.config import load_text
from reconciler.targets.openwebui import openwebui_targets
from tests.openwebui_harness import OpenWebUIUnavailable, free_port, start_openwebui


def test_a_missing_install_is_an_error_that_says_how_to_install(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAFLEET_CACHE", str(tmp_path))
    with pytest.raises(OpenWebUIUnavailable, match="scripts/openwebui-venv.sh"):
        start_openwebui("http://127.0.0.1:9")


def test_a_server_that_dies_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "owui-0.12.4" / "bin" / "open-webui"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho 'database is locked: cannot migrate'\nexit 3\n")
    exe.chmod(0o755)
    monkeypatch.setenv("OLLAFLEET_CACHE", str(tmp_path))
    with pytest.raises(OpenWebUIUnavailable, match=r"(?s)status 3.*database is locked"):
        start_openwebui("http://127.0.0.1:9", timeout=20)


def test_an_unreachable_open_webui_is_an_error_value_not_an_exception() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    state = load_text(f'version = 1\n[openwebui]\nurl = "{url}"\napi_key = "${{K}}"\n', env={"K": "sk-secret1"})
    [target] = openwebui_targets(state)

    async def observe() -> str | None:
        try:
            return (await target.observe()).error
        finally:
            await target.close()

    error = asyncio.run(observe())
    assert error is not None and "unreachable" in error and url in error and "sk-secret1" not in error


def test_no_openwebui_section_means_no_target() -> None:
    assert openwebui_targets(load_text("version = 1\n")) == []
