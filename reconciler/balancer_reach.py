"""`plan` and `apply` point Open WebUI at the balancer, which runs only inside `ollafleet daemon`:
say so when it does not answer, instead of leaving the chat page empty without a word."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx

from reconciler.config import DesiredState
from reconciler.plan.changes import Plan, TargetProblem

TARGET = "balancer"   # the notes' target name in plan output


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        await client.get(url.rstrip("/") + "/api/version")
        return True
    except httpx.HTTPError:
        return False


async def balancer_notes(state: DesiredState, timeout: float = 2.0) -> list[TargetProblem]:
    """One note per Ollama URL of Open WebUI that does not answer from this PC, and per [balancer]
    setting the running daemon uses otherwise than the file says."""
    if state.openwebui is None:
        return await running_notes(state, timeout)
    balancer = state.balancer_public_url()
    urls = state.openwebui.ollama_urls or [balancer]
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        try:
            answers = await asyncio.wait_for(asyncio.gather(*(_answers(client, u) for u in urls)), timeout + 1)
        except asyncio.TimeoutError:
            answers = [False] * len(urls)
    notes = []
    for url, ok in zip(urls, answers):
        if ok:
            continue
        if url.rstrip("/") == balancer.rstrip("/"):
            text = (f"Open WebUI's Ollama URL {url} is the ollafleet balancer, and it does not answer: "
                    "Open WebUI will show no models until `ollafleet daemon` runs")
        else:
            text = f"Open WebUI's Ollama URL {url} does not answer from this PC: Open WebUI may show no models from it"
        notes.append(TargetProblem(TARGET, text))
    return notes + await running_notes(state, timeout)


async def running_notes(state: DesiredState, timeout: float = 2.0) -> list[TargetProblem]:
    """Where the daemon answering at the file's status_listen runs another [balancer] than the file
    says (e.g. a file written by `import` without --daemon): one note per setting."""
    host, _, port = state.reconcile.status_listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            r = await asyncio.wait_for(client.get(f"http://{host}:{port}/status"), timeout + 1)
            running = ((r.json() or {}).get("balancer") or {}).get("settings")
    except (httpx.HTTPError, ValueError, AttributeError, asyncio.TimeoutError):
        return []
    if not isinstance(running, dict):
        return []
    mine = state.balancer.model_dump(mode="json", exclude_none=True)
    return [TargetProblem(TARGET, f"the running daemon ({host}:{port}) uses [balancer] {key} = {running.get(key)!r}, "
                                  f"this file says {value!r}; a daemon reading this file applies it"
                                  + (" after a restart" if key == "listen" else " at once"))
            for key, value in mine.items() if running.get(key, value) != value]


def with_notes(plan: Plan, notes: list[TargetProblem]) -> Plan:
    return dataclasses.replace(plan, notes=plan.notes + tuple(notes)) if notes else plan
