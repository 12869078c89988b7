"""Checks that span the file: references, duplicates, names and parameter values."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from balancer.classify import normalize_model
from reconciler.config.params import PARAMS, check_param
from reconciler.config.problems import Problem, did_you_mean
from reconciler.config.runtime import v1_name
from reconciler.config.schema import DesiredState
from reconciler.config.values import split_listen

# Ollama's model name: [host/][namespace/]model[:tag]
_NAME = re.compile(
    r"^(?:[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}/)?(?:[A-Za-z0-9_][A-Za-z0-9_-]{0,79}/)?"
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?$")

# Open WebUI passes these to Ollama next to the Ollama options
OPENWEBUI_EXTRA_PARAMS = {"keep_alive": "string", "think": "bool", "format": "string"}


def valid_model_name(name: str) -> bool:
    return bool(_NAME.match(name))


def check(file: str, state: DesiredState) -> list[Problem]:
    out: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        out.append(Problem(file, path, message, hint))

    names = [n.name for n in state.nodes]
    model_names = list(state.models)
    seen_names: dict[str, int] = {}
    seen_urls: dict[tuple[str, str, int, str], int] = {}
    _check_addresses(problem, state)
    for i, node in enumerate(state.nodes):
        if node.name in seen_names:
            problem(("nodes", i, "name"), f'duplicate node name "{node.name}" (also nodes[{seen_names[node.name]}])')
        seen_names.setdefault(node.name, i)
        url = endpoint(node.url)
        if url in seen_urls:
            j = seen_urls[url]
            other = state.nodes[j].url
            problem(("nodes", i, "url"), f'duplicate node URL "{node.url}" (also nodes[{j}])' if other == node.url
                    else f'duplicate node URL "{node.url}": the same node as nodes[{j}] ("{other}")')
        seen_urls.setdefault(url, i)
        for j, m in enumerate(node.models or []):
            if m not in state.models:
                problem(("nodes", i, "models", j), f'model "{m}" is not declared in [models]',
                        did_you_mean(m, model_names))
            elif (allowed := state.models[m].nodes) is not None and node.name not in allowed:
                problem(("nodes", i, "models", j), f'model "{m}" lists nodes {allowed}, '
                        f'which do not include "{node.name}"')

    lowered: dict[str, str] = {}
    for name, model in state.models.items():
        at = ("models", name)
        if not valid_model_name(name):
            problem(at, f'"{name}" is not a valid Ollama model name (expected [host/][namespace/]model[:tag])')
        key = normalize_model(name)
        if key in lowered:
            problem(at, f'"{name}" is the same model as "{lowered[key]}" (Ollama names ignore case; no tag means :latest, the default registry and namespace can be left out)')
        lowered.setdefault(key, name)
        sources = [s for s in ("pull", "gguf", "ollama_dir", "from") if getattr(model, "from_" if s == "from" else s) is not None]
        if len(sources) > 1:
            problem(at, f"choose one source: {' and '.join(sources)} are both set")
        if model.pull is not None and not valid_model_name(model.pull):
            problem(at + ("pull",), f'"{model.pull}" is not a valid model name to pull')
        if model.from_ is not None:
            if model.from_ not in state.models:
                problem(at + ("from",), f'base model "{model.from_}" is not declared in [models]',
                        did_you_mean(model.from_, [m for m in model_names if m != name]) or f'declare [models."{model.from_}"] so it is pulled first')
            elif model.from_ == name:
                problem(at + ("from",), "a model cannot be derived from itself")
        if (model.parameters or model.system or model.template) and model.source == "pull":
            problem(at + ("parameters",), "parameters, system and template need a source to build on: "
                    'set from = "<base model>", gguf = "<file>" or ollama_dir = "<models folder>"')
        _check_params(problem, at + ("parameters",), model.parameters, {})
        for j, node_name in enumerate(model.nodes or []):
            if node_name not in names:
                problem(at + ("nodes", j), f'node "{node_name}" is not declared in [[nodes]]',
                        did_you_mean(node_name, names))
        if model.openwebui is not None:
            _check_params(problem, at + ("openwebui", "params"), model.openwebui.params, OPENWEBUI_EXTRA_PARAMS)
        _check_enforce(problem, at, state, name)

    _check_derived_cycles(problem, state)
    for i, node in enumerate(state.nodes):
        on_node = state.models_on(node)
        for name in on_node:
            base = state.models[name].from_
            if base in state.models and base not in on_node:
                problem(("nodes", i), f'derived model "{name}" is on "{node.name}" but its base "{base}" is not')
    ow = state.openwebui
    if ow is not None:
        if ow.task_model is not None and ow.task_model not in state.models:
            problem(("openwebui", "task_model"), f'model "{ow.task_model}" is not declared in [models]',
                    did_you_mean(ow.task_model, model_names))
        if ow.api_key is None and (ow.admin_email is None or ow.admin_password is None):
            problem(("openwebui",), "credentials are missing: set api_key, or admin_email and admin_password, "
                    'as "${VARIABLE}" references')
    if state.alerts is not None and state.alerts.webhook is None and not state.alerts.command:
        problem(("alerts",), "nothing to send alerts with: set webhook = \"${VARIABLE}\" or command = [...]")
    return out


def _check_params(problem: Any, at: tuple[str | int, ...], params: dict[str, Any], extra: dict[str, str]) -> None:
    for key, value in params.items():
        if key in PARAMS:
            wrong = check_param(key, value)
            if wrong:
                problem(at + (key,), wrong)
        elif key in extra:
            ok = isinstance(value, bool) if extra[key] == "bool" else isinstance(value, (str, int))
            if not ok:
                problem(at + (key,), f"expected a {extra[key]}, got {value!r}")
        else:
            problem(at + (key,), "unknown Ollama parameter", did_you_mean(key, [*PARAMS, *extra]))


def _check_enforce(problem: Any, at: tuple[str | int, ...], state: DesiredState, name: str) -> None:
    model = state.models[name]
    if model.openwebui is not None and model.openwebui.params and v1_name(name) in state.models:
        problem(("models", v1_name(name)), f'"{v1_name(name)}" is the name ollafleet gives the model that serves '
                f'/v1 requests for "{name}"', "choose another name")
    if not model.enforce_params:
        return
    declared = {**model.parameters, **(model.openwebui.params if model.openwebui else {})}
    if not any(k in PARAMS for k in declared):
        problem(at + ("enforce_params",), "there is nothing to enforce: the model declares no parameters",
                f'set [models."{name}".openwebui] params, or remove enforce_params')
    elif state.balancer.apply_model_params == "off":
        problem(at + ("enforce_params",), 'has no effect while [balancer] apply_model_params = "off"',
                'set apply_model_params = "fill" or "enforce"')


def _check_derived_cycles(problem: Any, state: DesiredState) -> None:
    in_loop: set[str] = set()
    for name in state.models:
        if name in in_loop:
            continue
        seen = [name]
        current = state.models[name].from_
        while current is not None and current in state.models:
            if current in seen:
                problem(("models", name, "from"), "derived models form a loop: " + " → ".join([*seen, current]))
                in_loop.update(seen)
                break
            seen.append(current)
            current = state.models[current].from_


def _host(host: str) -> str:
    """A host as one spelling: localhost is 127.0.0.1, 127.1 is 127.0.0.1, IPv6 compressed."""
    host = host.lower().strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    if re.fullmatch(r"[0-9.]+", host) or re.fullmatch(r"0x[0-9a-f.x]+", host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))    # the shorthands a URL parser accepts
        except OSError:
            return host
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def endpoint(url: str) -> tuple[str, str, int, str]:
    """What a URL reaches: scheme, host (one spelling), port (the scheme's by default), path."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, _host(parts.hostname or ""), port, parts.path.rstrip("/")


def _local(host: str) -> bool:
    """A host that is this machine, by name or loopback address (nothing is looked up)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("0.0.0.0", socket.gethostname().lower())


def _same_place(listen: str, host: str, port: int) -> bool:
    """Does a server listening on `listen` answer at host:port?"""
    lhost, lport = split_listen(listen)
    lhost = _host(lhost)
    if lport == 0 or lport != port:
        return False
    if lhost in ("0.0.0.0", "::", ""):
        return _local(host) or host in ("0.0.0.0", "::")
    return lhost == host or (_local(lhost) and host in ("0.0.0.0", "::"))


def _check_addresses(problem: Any, state: DesiredState) -> None:
    """No node is this daemon's own balancer or status server, and those two do not collide."""
    listen, status = state.balancer.listen, state.reconcile.status_listen
    shost, sport = split_listen(status)
    if _same_place(listen, _host(shost), sport) or _same_place(status, _host(split_listen(listen)[0]),
                                                               split_listen(listen)[1]):
        problem(("reconcile", "status_listen"), f'"{status}" is the balancer\'s address too '
                f'(balancer.listen = "{listen}")', "give the status page another port")
    public = endpoint(state.balancer.public_url) if state.balancer.public_url else None
    for i, node in enumerate(state.nodes):
        scheme, host, port, path = endpoint(node.url)
        if public is not None and (scheme, host, port, path) == public or _same_place(listen, host, port):
            problem(("nodes", i, "url"), f'"{node.url}" is this daemon\'s own balancer (balancer.listen = '
                    f'"{listen}"{", public_url" if public else ""}): requests would go round in a loop',
                    "give the node's own Ollama address")
        elif _same_place(status, host, port):
            problem(("nodes", i, "url"), f'"{node.url}" is this daemon\'s status address '
                    f'(reconcile.status_listen = "{status}"), not an Ollama node', "give the node's own Ollama address")
