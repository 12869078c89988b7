"""Every call to a server has a deadline, whatever the server sends: `plan` and `apply` end in
bounded time against a trickling, silent or garbage server, naming the node."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.errors import TemporaryError
from reconciler.targets.ollama import node_targets
from reconciler.targets.ollama.client import OllamaClient
from reconciler.targets.openwebui.client import OpenWebUIClient

PULL_LINE = b'{"status":"pulling manifest"}\n'


class FakeServer:
    """A hostile HTTP server on 127.0.0.1, one thread per connection.

    trickle: 200 and a long body, one byte every 0.5 s; silent: reads, never answers;
    garbage: bytes that are not HTTP; same_line: a 200 NDJSON stream repeating one line."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.wait(0.5):
                    conn.sendall(b" ")
            elif self.mode == "garbage":
                conn.sendall(b"\x16\x03\x01\x00garbage, not HTTP at all\r\n\r\n")
                self.stop.wait(30)
            elif self.mode == "same_line":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                while not self.stop.wait(0.1):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(PULL_LINE), PULL_LINE))
            else:
                self.stop.wait(30)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(params=["trickle", "silent", "garbage"])
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    s = FakeServer(request.param)
    yield s
    s.close()


def write_file(tmp_path: Path, url: str) -> str:
    path = tmp_path / "desired_state.toml"
    path.write_text(f'version = 1\n[[nodes]]\nname = "gpu-7"\nurl = "{url}"\n[models."llama3.2:1b"]\n')
    return str(path)


def args(file: str) -> argparse.Namespace:
    return argparse.Namespace(file=file, json=False, detailed_exitcode=False)


def test_plan_ends_within_the_deadline_naming_the_node(server: FakeServer, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    file = write_file(tmp_path, server.url)
    t0 = time.monotonic()
    code = cli.cmd_plan(args(file), factory=lambda s: node_targets(s, timeout=1.0))
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert code == 1
    assert took < 3.5, f"plan took {took:.1f} s against a {server.mode} server"
    assert "ollama/gpu-7" in out and server.url in out


def test_apply_ends_within_the_deadline_naming_the_node(server: FakeServer, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    file = write_file(tmp_path, server.url)
    t0 = time.monotonic()
    code = cli.cmd_apply(argparse.Namespace(file=file, json=False),
                         factory=lambda s: node_targets(s, timeout=1.0))
    assert code == 1 and time.monotonic() - t0 < 3.5
    assert "ollama/gpu-7" in capsys.readouterr().out


async def test_a_pull_without_progress_fails_after_stream_timeout() -> None:
    server = FakeServer("same_line")      # alive, but the same status line forever
    client = OllamaClient(server.url, name="ollama/gpu-7", timeout=1.0, stream_timeout=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TemporaryError, match="no progress for 1 s") as caught:
            await client.pull("llama3.2:1b")
        assert time.monotonic() - t0 < 2.5 and caught.value.target == "ollama/gpu-7"
    finally:
        await client.close()
        server.close()


async def test_open_webui_calls_have_a_deadline(server: FakeServer) -> None:
    client = OpenWebUIClient(server.url, timeout=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TemporaryError, match=server.url):
            await client.public_config()
        assert time.monotonic() - t0 < 3.0
    finally:
        await client.close()
