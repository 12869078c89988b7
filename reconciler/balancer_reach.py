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
    """One note per Ollama URL of Open WebUI that does not answer from this PC."""
    if state.openwebui is None:
        return []
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
    return notes


def with_notes(plan: Plan, notes: list[TargetProblem]) -> Plan:
    return dataclasses.replace(plan, notes=plan.notes + tuple(notes)) if notes else plan
