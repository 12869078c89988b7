"""/api/pull and /api/create: progress streams with real effects on the node's store."""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web

from . import catalogue as cat
from .catalogue import CatalogueModel, lookup
from .create_files import model_from_blobs
from .faults import Fault
from .stream import StreamOut
from .names import ModelName, parse_name
from .state import InstalledModel, derive_model, model_from_catalogue
from .wire import (RAW, NDJSON, PLAIN_JSON, HTTPError, decode_body, native_json, ndjson_line,
                   want_model, want_stream)
from .node import SimNode

DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
BLOB_DIR = "/root/.ollama/models/blobs"
HEAD_BYTES = 4096   # kept of each uploaded blob: the GGUF header says weights, projector or adapter


class Progress:
    """NDJSON progress when streaming; otherwise silence and one final JSON object."""

    def __init__(self, request: web.Request, node: SimNode, stream: bool) -> None:
        self.request = request
        self.out = StreamOut(request, node, NDJSON,
                             lambda m: ndjson_line({"error": m})) if stream else None

    async def emit(self, obj: dict[str, Any]) -> None:
        if self.out is not None:
            await self.out.write(ndjson_line(obj))

    async def fail(self, err: HTTPError) -> web.StreamResponse:
        if self.out is None or not self.out.prepared:
            raise err
        await self.out.resp.write(ndjson_line({"error": err.message}))
        return await self.out.finish()

    async def done(self) -> web.StreamResponse:
        if self.out is not None:
            return await self.out.finish()
        return await native_json(self.request, {"status": "success"}, content_type=PLAIN_JSON)


def _dial_error(node: SimNode, n: ModelName, insecure: bool) -> str:
    scheme = "http" if insecure else "https"
    url = f"{scheme}://{n.host}/v2/{n.namespace}/{n.model}/manifests/{n.tag}"
    host = n.host.split(":")[0]
    if re.fullmatch(r"[\d.]+", host):
        port = n.host.split(":")[1] if ":" in n.host else ("80" if insecure else "443")
        return f'pull model manifest: Get "{url}": dial tcp {host}:{port}: connect: no route to host'
    return f'pull model manifest: Get "{url}": dial tcp: lookup {host}: no such host'


async def run_pull(node: SimNode, n: ModelName, progress: Progress, insecure: bool,
                   path: str) -> InstalledModel:
    """Stream a pull from the catalogue; raises HTTPError(500) like the real failures."""
    timing = node.timing
    await progress.emit({"status": "pulling manifest"})
    await timing.sleep(timing.pull_tick)
    if not node.registry_online:
        raise HTTPError(500, _dial_error(node, n, insecure))
    info = lookup(node.catalogue, n)
    if info is None:
        raise HTTPError(500, "pull model manifest: file does not exist")
    if not n.is_default_registry and not node.registry_redirects:
        raise HTTPError(500, "http: no Location header in response")
    full = info.layers() + [info.config()]
    disk_full = node.fault_state.applies(Fault.DISK_FULL, path)
    for layer in full:
        status = f"pulling {layer.digest[7:19]}"
        line: dict[str, Any] = {"status": status, "digest": layer.digest, "total": layer.size}
        if layer.digest in node.state.blobs:
            await progress.emit({**line, "completed": layer.size})
            continue
        partials = node.state.partials
        done = partials.get(layer.digest, 0)  # a "-partial" file from an earlier attempt
        await progress.emit({**line, "completed": done} if done else line)
        step = max(1, int(timing.pull_bps * timing.pull_tick)) if timing.pull_bps > 0 else layer.size
        while done < layer.size:
            await timing.sleep(min(timing.pull_tick, (layer.size - done) / step * timing.pull_tick))
            if disk_full and done + step >= layer.size // 3:
                raise HTTPError(500, f"write {BLOB_DIR}/sha256-{layer.digest[7:]}-partial: "
                                f"{node.fault_state.message}")
            done = partials[layer.digest] = min(layer.size, done + step)
            await progress.emit({**line, "completed": done})
        partials.pop(layer.digest, None)
    await progress.emit({"status": "verifying sha256 digest"})
    await progress.emit({"status": "writing manifest"})
    model = model_from_catalogue(info, n)
    node.state.put(model)
    await progress.emit({"status": "success"})
    return model


def named_request(request: web.Request, struct: str) -> tuple[dict[str, Any], str, ModelName]:
    """The body, model name and parsed name of a model-management request (400 if invalid)."""
    body = decode_body(request[RAW], struct)
    name = want_model(body, struct)
    n = parse_name(name)
    if n is None:
        raise HTTPError(400, "invalid model name")
    return body, name, n


async def pull(node: SimNode, request: web.Request) -> web.StreamResponse:
    body, name, n = named_request(request, "PullRequest")
    progress = Progress(request, node, want_stream(body, True))
    try:
        await run_pull(node, n, progress, bool(body.get("insecure")), request.path)
    except HTTPError as err:
        return await progress.fail(err)
    return await progress.done()


def _check_template(template: Any) -> str | None:
    if template is None:
        return None
    if not isinstance(template, str):
        raise HTTPError(400, "json: cannot unmarshal number into Go struct field "
                        "CreateRequest.template of type string")
    if template.count("{{") != template.count("}}"):
        raise HTTPError(400, "template error: template: :1: unclosed action")
    return template


async def create(node: SimNode, request: web.Request) -> web.StreamResponse:
    body, name, n = named_request(request, "CreateRequest")
    stream = want_stream(body, True)
    from_, files = body.get("from"), body.get("files")
    if not from_ and not files:
        raise HTTPError(400, "neither 'from' or 'files' was specified")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise HTTPError(400, "json: cannot unmarshal array into Go struct field "
                        "CreateRequest.parameters of type map[string]interface {}")
    template = _check_template(body.get("template"))
    system = body.get("system") if isinstance(body.get("system"), str) else None
    fn = parse_name(from_) if from_ else None
    if from_ and fn is None:
        raise HTTPError(400, "invalid model name")
    if files is not None and (not isinstance(files, dict) or not files):
        raise HTTPError(400, "invalid digest format")
    adapters = body.get("adapters")
    if adapters is not None and not isinstance(adapters, dict):
        raise HTTPError(400, "invalid digest format")
    for fname, digest in [*(files or {}).items(), *(adapters or {}).items()]:
        if os.path.isabs(fname) or fname.startswith(".."):
            raise HTTPError(400, "file path must be relative")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise HTTPError(400, "invalid digest format")
    progress = Progress(request, node, stream)
    try:
        if fn is not None:
            base = node.state.get(str(from_))
            if base is None:
                base = await run_pull(node, fn, progress, False, request.path)
            if body.get("quantize") and base.info.quantization not in ("F16", "BF16", "F32"):
                raise HTTPError(500, "quantization is only supported for F16, BF16 and F32 models")
            model = derive_model(base, n, parameters=params, template=template, system=system,
                                 license=body.get("license"), messages=body.get("messages"),
                                 parent=fn.short)
        else:
            assert isinstance(files, dict)  # without `from`, files was required above
            model = await model_from_blobs(node, n, {**body, "template": template, "system": system},
                                           _guess_info, progress)
        await _write_layers(node, model, progress, request.path)
    except HTTPError as err:
        return await progress.fail(err)
    return await progress.done()


async def _write_layers(node: SimNode, model: InstalledModel, progress: Progress, path: str) -> None:
    for layer in (*model.layers, model.config):
        if layer.media_type == cat.MT_CONFIG:
            continue
        verb = "using existing" if layer.digest in node.state.blobs else "creating new"
        if verb == "creating new" and node.fault_state.applies(Fault.DISK_FULL, path):
            raise HTTPError(500, f"write {BLOB_DIR}/sha256-{layer.digest[7:]}: "
                            f"{node.fault_state.message}")
        await progress.emit({"status": f"{verb} layer {layer.digest}"})
    await progress.emit({"status": "writing manifest"})
    node.state.put(model)
    await progress.emit({"status": "success"})


def _guess_info(name: ModelName, size: int) -> CatalogueModel:
    billions = size / 0.6e9
    psize = f"{billions:.1f}B" if billions >= 1 else f"{int(billions * 1000)}M"
    return CatalogueModel(name.short, "llama", psize, "Q4_K_M", size, 32768,
                          int(billions * 1e9), template="", license="")
