"""A small HTTP control endpoint for people and scripts driving a running simulator.

GET  /nodes                         → [{"name","url","fault","installed","loaded","loads",
                                        "prompt_tokens","cached_prompt_tokens",…}]
GET  /nodes/{name}/requests         → the node's request log
POST /nodes/{name}/fault            {"fault":"refuse", "after_chunks":3, ...}
DELETE /nodes/{name}/fault          → back to normal
POST /nodes/{name}/registry         {"online": false}
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from aiohttp import web

from .faults import Fault
from .node import SimNode
from .sim import Simulator

SIM: web.AppKey[Simulator] = web.AppKey("sim")


def _describe(node: SimNode) -> dict[str, Any]:
    return {"name": node.name, "url": node.url, "fault": node.fault_state.fault.value,
            "registry_online": node.registry_online, "installed": node.installed_models(),
            "loaded": node.loaded_models(), "requests": len(node.requests),
            "cancelled_generations": node.cancelled_generations, "loads": node.loads,
            "prompt_tokens": node.prompt_tokens,
            "cached_prompt_tokens": node.cached_prompt_tokens}


def _get(request: web.Request) -> Any:
    try:
        return request.app[SIM].nodes[request.match_info["name"]]
    except KeyError:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such node"}),
                               content_type="application/json") from None


async def list_nodes(request: web.Request) -> web.Response:
    return web.json_response([_describe(n) for n in request.app[SIM].nodes.values()])


async def node_requests(request: web.Request) -> web.Response:
    return web.json_response([asdict(r) for r in _get(request).requests])


async def set_fault(request: web.Request) -> web.Response:
    node = _get(request)
    try:
        body = await request.json()
        fault = Fault(str(body.pop("fault")).lower())
        kwargs = {k: body[k] for k in ("after_chunks", "delay", "message") if k in body}
        if "paths" in body:
            kwargs["paths"] = tuple(body["paths"])
        node.set_fault(fault, **kwargs)
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad fault request: {exc}",
                                  "faults": [f.value for f in Fault]}, status=400)
    return web.json_response(_describe(node))


async def clear_fault(request: web.Request) -> web.Response:
    node = _get(request)
    node.clear_fault()
    return web.json_response(_describe(node))


async def set_registry(request: web.Request) -> web.Response:
    node = _get(request)
    body = await request.json()
    node.registry_online = bool(body.get("online", True))
    return web.json_response(_describe(node))


def build_control_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIM] = sim
    app.router.add_get("/nodes", list_nodes)
    app.router.add_get("/nodes/{name}/requests", node_requests)
    app.router.add_post("/nodes/{name}/fault", set_fault)
    app.router.add_delete("/nodes/{name}/fault", clear_fault)
    app.router.add_post("/nodes/{name}/registry", set_registry)
    return app


async def start_control(sim: Simulator, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_control_app(sim), access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
