"""A server that echoes the Authorization header in its error detail cannot make ollafleet
print the key: plan text and JSON, apply JSON, the JSON log and /status all show [REDACTED]."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from reconciler import cli
from reconciler.daemon import logs
from reconciler.daemon.loop import Daemon
from reconciler.daemon.status import status_app
from reconciler.scrub import REDACTED, remember, scrub

KEY = "sk-0123456789abcdef-very-secret"


class Echo(BaseHTTPRequestHandler):
    """Open WebUI behind a careless proxy: its public config answers, everything else fails
    with a detail that quotes the request's Authorization header."""

    def _answer(self) -> None:
        if self.path == "/api/config":
            code, body = 200, {"version": "0.12.4", "onboarding": False}
        else:
            code, body = 500, {"detail": f"upstream refused, Authorization: {self.headers.get('Authorization')}"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def file(echo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OWUI_KEY", KEY)
    path = tmp_path / "desired_state.toml"
    path.write_text(f'version = 1\n[openwebui]\nurl = "{echo}"\napi_key = "${{OWUI_KEY}}"\n'
                    'default_user_role = "user"\n')
    return path


def run(cmd: str, file: Path, json_out: bool) -> None:
    ns = argparse.Namespace(file=str(file), json=json_out, detailed_exitcode=False)
    assert getattr(cli, cmd)(ns) == 1


def test_plan_and_apply_output_is_scrubbed(file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, as_json in (("cmd_plan", False), ("cmd_plan", True), ("cmd_apply", True), ("cmd_apply", False)):
        run(cmd, file, as_json)
        out = capsys.readouterr()
        text = out.out + out.err
        assert KEY not in text, f"{cmd} json={as_json} printed the key"
        assert "Authorization: Bearer " + REDACTED in text, text


async def test_json_log_and_status_are_scrubbed(file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("json")
    try:
        daemon = Daemon(file, env={"OWUI_KEY": KEY})
        await daemon.run_pass("start")
        err = capsys.readouterr().err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(REDACTED in line["message"] for line in lines), err
        assert KEY not in err
        async with TestClient(TestServer(status_app(daemon, None))) as client:
            body = await (await client.get("/status")).text()
        assert KEY not in body and REDACTED in body
    finally:
        logging.getLogger().handlers[:] = []


def test_scrub_hides_the_longest_secret_whole() -> None:
    remember("abc-secret")
    remember("abc-secret-and-more")
    assert scrub("x abc-secret-and-more y abc-secret") == f"x {REDACTED} y {REDACTED}"
    remember("pw")        # too short to hide without garbling every line
    assert scrub("nothing here: pw") == "nothing here: pw"


async def test_import_output_is_scrubbed(echo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler import importer
    from simulator import Simulator

    async with Simulator() as sim:
        node = await sim.add_node("gpu-1")
        out = tmp_path / "imported.toml"
        args = cli.build_parser().parse_args(["import", "--node", f"gpu-1={node.url}", "--openwebui", echo,
                                              "-o", str(out)])
        code = await asyncio.to_thread(importer.cmd_import, args, env={"OPENWEBUI_API_KEY": KEY})
    assert code == 1            # Open WebUI could not be read
    printed = capsys.readouterr()
    assert KEY not in printed.out + printed.err + out.read_text()
    assert REDACTED in printed.err + out.read_text()
