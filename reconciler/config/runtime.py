"""One declaration of each model's runtime parameters, read by the reconciler and the balancer.

What Ollama must run a model with is what the file declares for it: a built model's
`parameters` (baked in) and its `[models."m".openwebui] params` (which Open WebUI sends with
every chat); where both set a key, the openwebui value wins, as it does on the wire.

    runtime_params(state) -> {declared name: Runtime}

The reconciler builds the `v1_model` (it loads nothing: a `keep_loaded` model is pinned by the balancer);
the balancer fills (or enforces) `options` into every request and pins `keep_alive`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.config.params import INT_PARAMS, PARAMS
from reconciler.config.schema import DesiredState

# the Ollama options an OpenAI- or Anthropic-style request can carry itself (ollama-api.md §9);
# the others (num_ctx, repeat_penalty, top_k, ...) reach Ollama only baked into a model
V1_CARRIES = frozenset({"temperature", "top_p", "num_predict", "seed", "stop",
                        "frequency_penalty", "presence_penalty"})
V1_SUFFIX = "-v1"


@dataclass(frozen=True)
class Runtime:
    options: dict[str, Any] = field(default_factory=dict)   # Ollama option names, JSON-typed
    keep_loaded: bool = False
    enforce: bool = False            # override what clients send, not only fill what they omit
    keep_alive: str | int | None = None   # openwebui params' keep_alive (for models not kept loaded)
    v1_model: str | None = None      # the derived model /v1 requests are sent to
    v1_parameters: dict[str, Any] = field(default_factory=dict)   # what that model bakes in

    @property
    def load_options(self) -> dict[str, Any]:
        """The options that decide the runner (a different value reloads the model)."""
        return {k: v for k, v in self.options.items() if PARAMS[k].load_time}


def v1_name(name: str) -> str:
    """The derived model that serves /v1 requests for `name`: "qwq:32b" → "qwq:32b-v1"."""
    last = name.rsplit("/", 1)[-1]
    return f"{name}{V1_SUFFIX}" if ":" in last else f"{name}:latest{V1_SUFFIX}"


def _wire(value: Any, key: str) -> Any:
    return int(value) if key in INT_PARAMS and isinstance(value, float) and value.is_integer() else value


def runtime_params(state: DesiredState) -> dict[str, Runtime]:
    """Per declared model that declares any runtime parameter or keep_loaded, what Ollama must
    run it with. With `[balancer] apply_model_params = "off"` no /v1 model is built."""
    mode = state.balancer.apply_model_params
    out: dict[str, Runtime] = {}
    for name, m in state.models.items():
        declared = m.openwebui.params if m.openwebui is not None else {}
        sent = {k: _wire(v, k) for k, v in declared.items() if k in PARAMS}
        options = {**{k: _wire(v, k) for k, v in m.parameters.items() if k in PARAMS}, **sent}
        keep_alive = declared.get("keep_alive")
        if not options and not m.keep_loaded and keep_alive is None:
            continue
        # only what Open WebUI sends needs baking: a built model's own parameters are in it already
        own = {k: _wire(v, k) for k, v in m.parameters.items()}
        baked = {k: v for k, v in sent.items() if k not in V1_CARRIES and own.get(k) != v}
        v1 = v1_name(name) if baked and mode != "off" else None
        out[name] = Runtime(options, m.keep_loaded, mode == "enforce" or m.enforce_params,
                            keep_alive if isinstance(keep_alive, (str, int)) else None,
                            v1, baked if v1 else {})
    return out


def balancer_note(state: DesiredState) -> str:
    """One line for `plan`: what the balancer does with the declared parameters ("" if nothing)."""
    mode = state.balancer.apply_model_params
    head = f"balancer (apply_model_params = {mode}): "
    runtime = runtime_params(state)
    if mode == "off":
        return head + "relays requests unchanged; declared parameters reach Ollama only from Open WebUI"
    with_options = [n for n, r in runtime.items() if r.options]
    if not runtime:
        return ""      # nothing declared: nothing to say
    parts = []
    enforced = [n for n in with_options if runtime[n].enforce]
    filled = [n for n in with_options if not runtime[n].enforce]
    if filled:
        parts.append("fills declared parameters clients omit for " + ", ".join(filled))
    if enforced:
        parts.append("overrides clients' parameters with the declared ones for " + ", ".join(enforced))
    if any(r.load_options for r in runtime.values()):
        parts.append("always sends the declared num_ctx")
    pinned = [n for n, r in runtime.items() if r.keep_loaded]
    if pinned:
        parts.append("sends keep_alive -1 for " + ", ".join(pinned))
    v1 = [f"{n} → {r.v1_model}" for n, r in runtime.items() if r.v1_model]
    if v1:
        parts.append("sends /v1 requests to the derived models " + ", ".join(v1))
    return head + "; ".join(parts)
