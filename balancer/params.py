"""Declared model parameters put into inference requests: body in, body out. Pure, no I/O.

The file declares what Ollama must run each model with (reconciler/config/runtime.py). Clients
other than Open WebUI send none of it, and Ollama's /v1 layer sends temperature/top_p 1.0 when
the client omits them, so the balancer writes the declared values into every request for a
declared model, in each dialect's own fields:

- mode "fill": a declared value fills in what the client left out; "enforce" (or a model's
  `enforce`): the declared value replaces the client's; "off": bodies pass unchanged.
- load-time options (num_ctx, num_batch, ...) are always the declared ones: a client with
  another default would make the node reload the model (and drop its keep-alive pin).
- a `keep_loaded` model is always requested with keep_alive -1, whatever the client sent.
- /v1 requests cannot carry num_ctx, repeat_penalty, top_k, ... nor keep_alive: they are sent to
  the model's derived "-v1" model, which has those baked in (when some node has it), and shares
  the pinned runner because its load-time options are the same.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import gojson
from .classify import normalize_model

Mode = Literal["fill", "enforce", "off"]


@dataclass(frozen=True)
class ModelParams:
    options: Mapping[str, Any] = field(default_factory=dict)  # Ollama option names and values
    keep_loaded: bool = False
    enforce: bool = False
    keep_alive: str | int | None = None  # a default for clients that send none
    v1_model: str | None = None  # the derived model /v1 requests go to


LOAD_TIME = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"})
NATIVE = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})
_OPENAI = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "num_predict",
           "seed": "seed", "stop": "stop", "frequency_penalty": "frequency_penalty",
           "presence_penalty": "presence_penalty"}
# per /v1 path: request field -> the Ollama option it becomes (ollama-api.md §9)
V1_FIELDS: dict[str, dict[str, str]] = {
    "/v1/chat/completions": _OPENAI,
    "/v1/completions": _OPENAI,
    "/v1/responses": {"temperature": "temperature", "top_p": "top_p",
                      "max_output_tokens": "num_predict"},
    "/v1/messages": {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                     "max_tokens": "num_predict", "stop_sequences": "stop"},
}
# a client field that says the same as ours: theirs counts as given
_SAME = {"max_tokens": ("max_completion_tokens",)}


def apply_params(path: str, body: bytes, params: Mapping[str, ModelParams], mode: Mode,
                 has_model: Callable[[str], bool] = lambda _: True) -> bytes:
    """`body` with the declared parameters of its model applied; the same bytes when nothing
    changes (another path, an undeclared model, mode "off", a body that is not a JSON object).
    `params` is keyed by normalised model name; `has_model` says whether some node has a model."""
    return applied(path, body, params, mode, has_model)[0]


def applied(path: str, body: bytes, params: Mapping[str, ModelParams], mode: Mode,
            has_model: Callable[[str], bool] = lambda _: True,
            data: Any = None) -> tuple[bytes, dict[str, Any] | None]:
    """apply_params, and the JSON object the returned body holds when it was decoded here
    (None when it was not), so that the proxy does not decode every body twice. `data`: the
    body already decoded (gojson.decode, canonical); it is changed in place."""
    if mode == "off" or not params or (path not in NATIVE and path not in V1_FIELDS):
        return body, None
    if data is None:
        try:
            data, rewrite = gojson.decode(body) if body else (None, False)
        except ValueError:  # also BadJson: the proxy refuses those before
            return body, None
        if rewrite and isinstance(data, dict):
            body = gojson.encode(data)
    if not isinstance(data, dict):
        return body, None
    name = data.get("model") or data.get("name")
    declared = params.get(normalize_model(name)) if isinstance(name, str) and name else None
    if declared is None:
        return body, data
    enforce = mode == "enforce" or declared.enforce
    if path in NATIVE:
        changed = _native(data, declared, enforce)
    else:
        changed = _v1(data, V1_FIELDS[path], declared, enforce, has_model)
    return (gojson.encode(data) if changed else body), data


def _native(data: dict[str, Any], p: ModelParams, enforce: bool) -> bool:
    changed = False
    options = data.get("options")
    if options is None:
        options = {}
    if isinstance(options, dict):  # a wrong type is the client's error, answered by Ollama
        for key, value in p.options.items():
            if (enforce or key in LOAD_TIME or key not in options) and options.get(key) != value:
                options[key] = value
                changed = True
        if changed:
            data["options"] = options
    keep = -1 if p.keep_loaded else p.keep_alive
    if keep is not None and data.get("keep_alive") != keep and (
            p.keep_loaded or enforce or data.get("keep_alive") is None):
        data["keep_alive"] = keep
        changed = True
    return changed


def _v1(data: dict[str, Any], fields: dict[str, str], p: ModelParams, enforce: bool,
        has_model: Callable[[str], bool]) -> bool:
    changed = False
    for field_name, option in fields.items():
        if option not in p.options:
            continue
        value = p.options[option]
        if option == "num_predict" and (not isinstance(value, int) or value <= 0):
            continue  # "unlimited" has no /v1 spelling; max_tokens must be positive
        if not enforce and data.get(field_name) is None:
            # the client's newer spelling, which Ollama 0.13.5 ignores, as the field it reads
            value = next((data[f] for f in _SAME.get(field_name, ()) if data.get(f) is not None), value)
        elif not enforce:
            continue
        if data.get(field_name) != value:
            data[field_name] = value
            changed = True
        if enforce:
            for other in _SAME.get(field_name, ()):
                changed = data.pop(other, None) is not None or changed
    if p.v1_model and has_model(normalize_model(p.v1_model)):
        data["model"] = p.v1_model
        changed = True
    return changed
