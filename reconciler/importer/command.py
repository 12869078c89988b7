"""`ollafleet import`: read a running network and write the desired_state.toml that describes it.

    ollafleet import --node gpu-1=http://192.168.1.31:11434 --node gpu-2=... \
        [--openwebui http://192.168.1.22:3000] [--daemon 127.0.0.1:11435] [-o desired_state.toml] [--force]

Open WebUI credentials come from the environment, as for `apply`: the API key in
$OPENWEBUI_API_KEY (--api-key-env), or an admin's email and password in
$OPENWEBUI_ADMIN_EMAIL / $OPENWEBUI_ADMIN_PASSWORD (--admin-email-env, --admin-password-env).
The file names those variables as "${VAR}", never their values.

Exit codes: 0 written, everything was read; 1 written, but some server could not be read
(the header says INCOMPLETE) or the result failed its own check; 2 nothing written (the file
exists and --force is not given, bad arguments, missing credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import textwrap
import tomllib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from reconciler.config import load_text
from reconciler.errors import ConfigError
from reconciler.importer.build import Document, build
from reconciler.importer.folder import index_folders
from reconciler.importer.read import NodeRead, OpenWebUIRead, read_node, read_openwebui
from reconciler.scrub import scrub

__all__ = ["add_arguments", "cmd_import", "read_network", "render"]

_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------- TOML, one line per key

def _key(key: str) -> str:
    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


def _scalar(value: Any, multiline: bool = False) -> str:
    return tomli_w.dumps({"v": value}, multiline_strings=multiline)[len("v = "):].rstrip("\n")


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items()) + " }" if value else "{}"
    return _scalar(value)


def _lines(body: dict[str, Any]) -> list[str]:
    return [f"{_key(k)} = {_scalar(v, multiline=True) if isinstance(v, str) else _inline(v)}"
            for k, v in body.items()]


def _header(*path: str, array: bool = False) -> str:
    inner = ".".join(_key(p) for p in path)
    return f"[[{inner}]]" if array else f"[{inner}]"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False,
                         break_long_words=False) or ["#"]


def render(doc: Document, *, when: datetime, sources: list[str]) -> str:
    """The file's text. Every value is written by tomli-w; the result is parsed back and
    compared with what was meant, so a formatting slip cannot produce a different file."""
    out: list[str] = []
    out += _comment(f"desired_state.toml written by `ollafleet import` on {when:%Y-%m-%d %H:%M} UTC "
                    f"from the live servers: {'; '.join(sources)}.")
    out += _comment("`ollafleet plan` against them shows no change: edit this file to manage them from now on.")
    if doc.missing:
        out.append("#")
        out += _comment("INCOMPLETE: these servers could not be read, so what they hold is not in this file:")
        for m in doc.missing:
            out += _comment(f"  {m}")
    data: dict[str, Any] = {"version": 1, "balancer": doc.balancer,
                            "reconcile": {"interval": "60s", "prune_models": False}}
    out += ["version = 1", ""]
    out += _comment("The load balancer inside the ollafleet daemon; Open WebUI reaches it at public_url.")
    out += [_header("balancer"), *_lines(doc.balancer)]
    out += _comment('apply_model_params = "fill" puts each model\'s declared parameters into every request '
                    "(clients other than Open WebUI send none) and builds a <model>-v1 model for /v1 clients.")
    out += [""]
    out += [_header("reconcile"), *_lines(data["reconcile"]),
            "# prune_models = true would delete models on the nodes that this file does not list", ""]
    out += _comment("capability, speed and max_concurrent (OLLAMA_NUM_PARALLEL) cannot be read from a node: "
                    "set them here by hand.")
    if doc.nodes:
        data["nodes"] = doc.nodes
    for node in doc.nodes:
        for text in doc.node_comments.get(node["name"], []):
            out += _comment(text)
        out += [_header("nodes", array=True), *_lines(node), ""]
    models: dict[str, Any] = {}
    group = None
    for section in doc.models:
        here = "nodes" in section.body
        if here != group:
            group = here
            out += _comment("Models on only some nodes:" if here else "Models on every node:")
        for text in section.comments:
            out += _comment(text)
        out += [_header("models", section.name), *_lines(section.body), ""]
        models[section.name] = dict(section.body)
        if section.openwebui is not None:
            out += [_header("models", section.name, "openwebui"), *_lines(section.openwebui), ""]
            models[section.name]["openwebui"] = section.openwebui
    if models:
        data["models"] = models
    if doc.openwebui is not None:
        for text in doc.openwebui_comments:
            out += _comment(text)
        out += [_header("openwebui"), *_lines(doc.openwebui), ""]
        data["openwebui"] = doc.openwebui
    if doc.warnings:
        out += _comment("Found on the servers but not expressible in this file (left as they are):")
        for w in doc.warnings:
            out += _comment(f"- {w}")
    text = "\n".join(out).rstrip("\n") + "\n"
    if tomllib.loads(text) != data:
        raise RuntimeError("ollafleet import wrote a file that does not read back as intended (a bug)")
    return text


# ---------------------------------------------------------------- reading and the command

async def read_network(nodes: list[tuple[str, str]], openwebui: str | None, credentials: Mapping[str, str],
                       env: Mapping[str, str], timeout: float = 10.0) -> tuple[list[NodeRead], OpenWebUIRead | None]:
    reads = list(await asyncio.gather(*(read_node(n, u, timeout=timeout) for n, u in nodes)))
    ow = None
    if openwebui is not None:
        ids = sorted({m.name for r in reads if r.view is not None for m in r.view.models})
        ow = await read_openwebui(openwebui, credentials, env, ids)
    return reads, ow


def _node_arg(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f'expected NAME=URL such as gpu-1=http://192.168.1.31:11434, got "{text}"')
    return name.strip(), url.strip().rstrip("/")


def _var_arg(text: str) -> str:
    if not _VAR.match(text):
        raise argparse.ArgumentTypeError(f'"{text}" is not an environment variable name')
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Read the Ollama nodes (and Open WebUI) of a running network and write the "
                     "desired_state.toml that describes it: `ollafleet plan` against it shows no change.")
    p.epilog = ("Exit codes: 0 written, everything read; 1 written but INCOMPLETE (a server could not be read); "
                "2 nothing written (the file exists without --force, bad arguments, no credentials).")
    p.add_argument("--node", action="append", type=_node_arg, default=[], metavar="NAME=URL", required=True,
                   help="an Ollama node to read (repeat for each node)")
    p.add_argument("--openwebui", metavar="URL", help="the Open WebUI to read (its settings and model entries)")
    p.add_argument("-o", "--output", default="desired_state.toml", help="the file to write ('-': standard output)")
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.add_argument("--ollama-dir", action="append", default=[], metavar="FOLDER",
                   help="a copied Ollama models folder the nodes' models may have been made from (repeatable)")
    p.add_argument("--api-key-env", type=_var_arg, default="OPENWEBUI_API_KEY", metavar="VAR",
                   help="environment variable holding an Open WebUI admin API key")
    p.add_argument("--admin-email-env", type=_var_arg, default="OPENWEBUI_ADMIN_EMAIL", metavar="VAR",
                   help="environment variable holding an Open WebUI admin's email, to sign in without "
                   "an API key (default OPENWEBUI_ADMIN_EMAIL)")
    p.add_argument("--admin-password-env", type=_var_arg, default="OPENWEBUI_ADMIN_PASSWORD", metavar="VAR",
                   help="environment variable holding that admin's password (default OPENWEBUI_ADMIN_PASSWORD)")
    p.add_argument("--daemon", metavar="URL",
                   help="the status address (reconcile.status_listen) of the ollafleet daemon that serves this "
                        "network: its [balancer] settings are imported as they run")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each server")


async def read_daemon(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The [balancer] a running daemon uses, from its /status."""
    url = url if url.startswith(("http://", "https://")) else "http://" + url
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.get(url.rstrip("/") + "/status")
            r.raise_for_status()
            settings = ((r.json() or {}).get("balancer") or {}).get("settings")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise OSError(f"daemon {url}: {exc}") from exc
    if not isinstance(settings, dict):
        raise OSError(f"daemon {url}: its /status shows no balancer settings (an older ollafleet?)")
    return settings


def _credentials(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    creds: dict[str, str] = {}
    if env.get(args.api_key_env):
        creds["api_key"] = "${" + args.api_key_env + "}"
    if env.get(args.admin_email_env) and env.get(args.admin_password_env):
        creds["admin_email"] = "${" + args.admin_email_env + "}"
        creds["admin_password"] = "${" + args.admin_password_env + "}"
    return creds


def cmd_import(args: argparse.Namespace, *, now: datetime | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    out = args.output
    names = [n for n, _ in args.node]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        print(f"ollafleet import: node name given twice: {', '.join(dupes)}", file=sys.stderr)
        return 2
    if out != "-" and Path(out).exists() and not args.force:
        print(f"ollafleet import: {out} exists; not overwritten (use --force, or -o another file)", file=sys.stderr)
        return 2
    creds = _credentials(args, env)
    if args.openwebui is not None and not creds:
        print(f"ollafleet import: Open WebUI needs credentials: set {args.api_key_env}, or {args.admin_email_env} "
              f"and {args.admin_password_env}", file=sys.stderr)
        return 2
    openwebui = args.openwebui.rstrip("/") if args.openwebui else None
    nodes = list(args.node)     # [[nodes]] order is the balancer's preference: keep the user's order
    reads, ow = asyncio.run(read_network(nodes, openwebui, creds, env, args.timeout))
    folders, folder_warnings = index_folders(args.ollama_dir)
    running, daemon_error = None, None
    if getattr(args, "daemon", None):
        try:
            running = asyncio.run(read_daemon(args.daemon, args.timeout))
        except OSError as exc:
            daemon_error = str(exc)
    doc = build(reads, ow, creds, folders, running)
    doc.warnings[:0] = folder_warnings
    if daemon_error is not None:
        doc.missing.append(daemon_error + "; [balancer] says how a hand-built network's balancer relays")
    sources = [f"node {n} {u}" for n, u in nodes] + ([f"Open WebUI {openwebui}"] if openwebui else [])
    # a server's error text may quote a credential: the file and the messages are scrubbed
    text = scrub(render(doc, when=now or datetime.now(timezone.utc), sources=sources))
    code = 0
    try:
        load_text(text, out, env=env)
    except ConfigError as exc:
        code = 1
        for problem in exc.problems:
            print(f"ollafleet import: the written file does not validate: {problem}", file=sys.stderr)
    for warning in doc.warnings:
        print(scrub(f"warning: {warning}"), file=sys.stderr)
    for missing in doc.missing:
        print(scrub(f"could not read {missing}"), file=sys.stderr)
    if doc.missing:
        code = 1
    if out == "-":
        sys.stdout.write(text)
    else:
        path = Path(out)
        tmp = path.with_name(f".{path.name}.import-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    models = len(doc.models)
    state = "INCOMPLETE: " if doc.missing else ""
    print(f"ollafleet import: {state}wrote {out} ({len(doc.nodes)} nodes, {models} models"
          f"{', Open WebUI settings' if doc.openwebui and ow and ow.error is None else ''})", file=sys.stderr)
    return code
