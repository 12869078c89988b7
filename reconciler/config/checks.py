"""Checks that span the file: references, duplicates, names and parameter values."""

from __future__ import annotations

import re
from typing import Any

from balancer.classify import normalize_model
from reconciler.config.params import PARAMS, check_param
from reconciler.config.problems import Problem, did_you_mean
from reconciler.config.runtime import v1_name
from reconciler.config.schema import DesiredState

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
    seen_urls: dict[str, int] = {}
    for i, node in enumerate(state.nodes):
        if node.name in seen_names:
            problem(("nodes", i, "name"), f'duplicate node name "{node.name}" (also nodes[{seen_names[node.name]}])')
        seen_names.setdefault(node.name, i)
        url = node.url.lower()
        if url in seen_urls:
            problem(("nodes", i, "url"), f'duplicate node URL "{node.url}" (also nodes[{seen_urls[url]}])')
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
