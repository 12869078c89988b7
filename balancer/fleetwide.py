"""Fleet-wide answers for GET /api/tags, /api/ps and /v1/models: the union over all nodes."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .classify import RequestInfo, normalize_model
from .fleet import Fleet
from .pollers import Pollers, listed_models, model_name

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(text: object) -> datetime:
    """Go RFC3339Nano -> aware datetime (nanoseconds trimmed); junk sorts last."""
    if not isinstance(text, str) or not text:
        return _EPOCH
    t = text.replace("Z", "+00:00")
    if "." in t:
        head, rest = t.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        t = head + "." + rest[:min(digits, 6)].ljust(6, "0") + rest[digits:]
    try:
        parsed = datetime.fromisoformat(t)
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def union(listings: list[Any], time_key: str) -> list[dict[str, Any]]:
    """Models of every listing, one per name (the newest), newest first."""
    best: dict[str, dict[str, Any]] = {}
    for listing in listings:
        for m in listed_models(listing):
            name = model_name(m)
            old = best.get(name)
            if old is None or parse_time(m.get(time_key)) > parse_time(old.get(time_key)):
                best[name] = m
    return sorted(best.values(), key=lambda m: parse_time(m.get(time_key)), reverse=True)


def openai_models(models: list[dict[str, Any]]) -> dict[str, Any]:
    data = []
    for m in models:
        name = model_name(m)
        parts = name.split(":", 1)[0].split("/")
        data.append({"id": name, "object": "model",
                     "created": int(parse_time(m.get("modified_at")).timestamp()),
                     "owned_by": parts[-2] if len(parts) > 1 else "library"})
    return {"object": "list", "data": data or None}


class FleetWide:
    def __init__(self, fleet: Fleet, pollers: Pollers) -> None:
        self.fleet = fleet
        self.pollers = pollers

    async def gather(self, path: str) -> list[Any]:
        return await self.pollers.listings(path)

    async def answer(self, request: web.BaseRequest, info: RequestInfo,
                     hidden: frozenset[str] = frozenset()) -> web.Response:
        """`hidden`: normalised names left out of the model lists people pick from (the -v1
        helper models the reconciler builds for /v1 clients, which are served all the same)."""
        if info.path == "/api/ps":
            body = {"models": union(await self.gather("/api/ps"), "expires_at")}
        else:
            models = [m for m in union(await self.gather("/api/tags"), "modified_at")
                      if normalize_model(model_name(m)) not in hidden]
            if info.path == "/v1/models":
                text = json.dumps(openai_models(models)) + "\n"
                return web.Response(body=text.encode(), headers={"Content-Type": "application/json"})
            body = {"models": models}
        return web.Response(body=json.dumps(body, separators=(",", ":")).encode(),
                            headers={"Content-Type": "application/json; charset=utf-8"})
