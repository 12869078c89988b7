"""The Ollama nodes as targets: one `ollama/<node>` per node, observed, diffed and changed
through the REST API only (reference: ollama-api.md §13 recipes).

    node_targets(state, *, base_dir=None, timeout=10.0, stream_timeout=600.0) -> list[OllamaNode]
    OllamaNode.observe() -> Observed(data=NodeView) | Observed(error="unreachable: ...")
    OllamaNode.diff(observed) -> (changes, notes)      pure, see diff.diff_node
    OllamaNode.apply(change, progress)                 one pull / create / upload+create / delete

Loading models is not a pass's work (a load waits behind people's generations): the daemon's
balancer pins keep_loaded models when a node is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from reconciler.config.params import PARAMS, check_param
from reconciler.config.runtime import balancer_note
from reconciler.config.schema import DesiredState
from reconciler.errors import PermanentError, TargetError, TemporaryError
from reconciler.plan.changes import Change
from reconciler.targets.base import Disruption, Observed, Progress
from reconciler.targets.ollama import folder as ollama_dir
from reconciler.targets.ollama.sources import source_problem
from reconciler.targets.ollama.client import OllamaClient
from reconciler.targets.ollama.facts import PullProgress, model_key, to_wire
from reconciler.targets.ollama.hashing import file_sha256
from reconciler.targets.ollama.diff import (NodeView, Wanted, WantedModel, Work, diff_node, needs_show,
                                            rewrites_gguf, settings_note, wanted_for)

__all__ = ["OllamaNode", "node_targets", "file_sha256"]

CHUNK = 1 << 20


async def _read_chunks(path: Path, task: str, progress: Progress, size: int) -> AsyncGenerator[bytes, None]:
    sent = 0
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            sent += len(chunk)
            progress.update(task, sent, size, "uploading")
            yield chunk


def check_parameters(model: WantedModel) -> None:
    """Ollama stores any value and then fails every request: refuse bad ones before sending."""
    for key, value in model.parameters.items():
        if key not in PARAMS:
            raise PermanentError(f"{model.name}: unknown Ollama parameter {key!r}; not sent")
        wrong = check_param(key, value)
        if wrong:
            raise PermanentError(f"{model.name}: parameter {key}: {wrong}; not sent")


# ---------------------------------------------------------------- the target

class OllamaNode:
    """One Ollama node. observe() reads, diff() is pure, apply() makes one change."""

    def __init__(self, wanted: Wanted, url: str, *, timeout: float = 10.0, stream_timeout: float = 600.0,
                 transport: httpx.AsyncBaseTransport | None = None, upload_gate: asyncio.Semaphore | None = None) -> None:
        self.name = f"ollama/{wanted.node}"
        self.node = wanted.node
        self.wanted = wanted
        self.effective = wanted              # ollama_dir models with their folder's values (observe)
        self.upload_gate = upload_gate or asyncio.Semaphore(1)   # shared by the nodes of one file
        self.api = OllamaClient(url, name=self.name, timeout=timeout, stream_timeout=stream_timeout,
                                transport=transport)
        self._locks: dict[str, asyncio.Lock] = {}
        self._built: set[str] = set()        # models (re)created in this pass: one create per model
        self._unbuildable: set[str] = set()  # models to create whose local source cannot be read
        self.notes: list[str] = []           # said once per plan, by the first node

    async def close(self) -> None:
        await self.api.close()

    async def observe(self) -> Observed[NodeView]:
        self._built.clear()
        try:
            version, models, loaded = await asyncio.gather(self.api.version(), self.api.tags(), self.api.ps())
            view = NodeView(version, tuple(models), tuple(loaded))
            names = needs_show(self.wanted, view)
            shows = await asyncio.gather(*(self.api.show(n) for n in names))
        except TargetError as exc:
            return Observed(self.name, error=str(exc))
        self.effective = await self._read_folders()
        files = await self._file_digests(view)
        view = replace(view, shows={model_key(n): s for n, s in zip(names, shows)}, files=files)
        return Observed(self.name, view, problems=await self._unreadable_sources(view))

    async def _unreadable_sources(self, view: NodeView) -> list[str]:
        """An error per model this node lacks whose GGUF file or models folder cannot be read;
        its create is left out of the plan (there is nothing to build it from)."""
        self._unbuildable = set()
        problems = []
        for w in self.wanted.models:
            if w.source in ("gguf", "ollama_dir") and view.present(w.name) is None:
                problem = await asyncio.to_thread(source_problem, w.name, w.gguf, w.ollama_dir)
                if problem is not None:
                    self._unbuildable.add(w.key)
                    problems.append(f'models."{w.name}": {problem}; it cannot be created on this node')
        return problems

    async def _read_folders(self) -> Wanted:
        """The wanted models with each ollama_dir model's folder values (unreadable: as declared)."""
        models = []
        for w in self.wanted.models:
            if w.source == "ollama_dir" and w.ollama_dir is not None:
                with contextlib.suppress(PermanentError, OSError):    # reported by apply if it must be built
                    w = ollama_dir.expected(await asyncio.to_thread(ollama_dir.read_folder, w.ollama_dir, w.name), w)
            models.append(w)
        return replace(self.wanted, models=tuple(models))

    async def _file_digests(self, view: NodeView) -> dict[str, str]:
        """sha256 of the GGUF files of the GGUF models present (once per process), to see a replaced file."""
        out: dict[str, str] = {}
        if rewrites_gguf(view.version):
            return out
        for w in self.wanted.models:
            if w.source == "gguf" and w.gguf is not None and view.present(w.name) is not None:
                try:
                    out[w.key] = await file_sha256(w.gguf)
                except PermanentError:
                    pass          # reported by apply if the model must be (re)built
            if w.source == "ollama_dir" and w.ollama_dir is not None and view.present(w.name) is not None:
                with contextlib.suppress(PermanentError, OSError):
                    folder = await asyncio.to_thread(ollama_dir.read_folder, w.ollama_dir, w.name)
                    out[w.key] = folder.weights.digest
        return out

    def diff(self, observed: Observed[NodeView]) -> tuple[list[Change[Work]], list[str]]:
        view = observed.data
        assert view is not None
        changes, notes = diff_node(self.name, self.effective, view)
        changes = [c for c in changes if not (c.data is not None and c.data.kind != "delete"
                                              and c.data.model is not None and c.data.model.key in self._unbuildable)]
        return changes, [*notes, settings_note(self.wanted), *self.notes]

    def disrupts(self, change: Change[Work]) -> Disruption | None:
        """A create or a delete leaves the model unusable on this node meanwhile; a pull does
        not (the node keeps serving the model it has while a new digest downloads)."""
        if change.data is None or change.data.kind not in ("create", "delete") or len(change.path) < 2:
            return None
        return Disruption(self.node, str(change.path[1]))

    def abandonable(self, change: Change[Work]) -> bool:
        """A pull can be cut off at no cost: Ollama keeps the part downloaded and resumes it."""
        return change.data is not None and change.data.kind == "pull"

    async def apply(self, change: Change[Work], progress: Progress) -> None:
        work = change.data
        assert work is not None
        if work.kind == "delete":
            await self.api.delete(work.name)
            return
        model = work.model
        assert model is not None
        lock = self._locks.setdefault(model.key, asyncio.Lock())
        async with lock:
            if work.kind == "pull":
                await self._pull(model, progress)
            elif work.kind == "create":
                if model.key in self._built:
                    return       # another drifted value of the same model: already re-created
                await self._create(model, progress)
                self._built.add(model.key)
            else:
                raise PermanentError(f"unknown change kind {work.kind!r}")

    # ------------------------------------------------------------ the work

    def _task(self, verb: str, model: WantedModel) -> str:
        return f"{self.node} {verb} {model.name}"

    async def _pull(self, model: WantedModel, progress: Progress) -> None:
        task = self._task("pull", model)
        seen = PullProgress()

        def on_line(line: dict[str, Any]) -> None:
            seen.feed(line)
            progress.update(task, seen.completed, seen.total, seen.status)

        try:
            await self.api.pull(model.pull, insecure=model.insecure, on_line=on_line)
        except TargetError:
            progress.done(task, "failed")
            raise
        if model_key(model.pull) != model.key:      # a mirror: serve it under the declared name
            await self.api.copy(model.pull, model.name)
            await self.api.delete(model.pull)
        progress.done(task, "pulled")
        if model.digest:
            got = next((m.digest for m in await self.api.tags() if model_key(m.name) == model.key), None)
            if got != model.digest:
                raise PermanentError(f"{model.name}: the registry serves digest {got}, the file pins {model.digest}")

    async def _create(self, model: WantedModel, progress: Progress) -> None:
        if model.source == "ollama_dir":
            await self._create_from_folder(model, progress)
            return
        check_parameters(model)
        body: dict[str, Any] = {"model": model.name, **model.create_body()}
        if "parameters" in body:
            body["parameters"] = to_wire(body["parameters"])
        if model.source == "from":
            assert model.base
            if await self.api.show(model.base) is None:      # else Ollama would pull it silently
                raise TemporaryError(f"{model.name}: its base {model.base} is not on the node")
            body["from"] = model.base
        else:
            assert model.gguf is not None
            body["files"] = {model.gguf.name: await self._upload(model, progress)}
        await self.api.create(body)

    async def _create_from_folder(self, model: WantedModel, progress: Progress) -> None:
        """Read and verify the folder's model (nothing sent if a blob is wrong), upload only the
        blobs the node lacks, then create it with every layer of the original."""
        assert model.ollama_dir is not None
        declared = next((w for w in self.wanted.models if w.key == model.key), model)
        check_parameters(declared)
        try:
            folder = await asyncio.to_thread(ollama_dir.read_folder, model.ollama_dir, model.name)
        except OSError as exc:
            raise PermanentError(f"{model.name}: cannot read {model.ollama_dir}: {exc}") from exc
        await ollama_dir.verify(folder)
        await ollama_dir.upload_missing(self.api, folder, self._task("upload", model), progress, self.upload_gate)
        body = {"model": model.name, **ollama_dir.create_body(folder, declared)}
        if "parameters" in body:
            body["parameters"] = to_wire(body["parameters"])
        await self.api.create(body)

    async def _upload(self, model: WantedModel, progress: Progress) -> str:
        assert model.gguf is not None
        path = model.gguf
        digest = "sha256:" + await file_sha256(path)
        if not await self.api.has_blob(digest):
            task = self._task("upload", model)
            size = os.path.getsize(path)
            try:    # aclosing: a failed upload closes the file now, not whenever the generator is collected
                async with self.upload_gate, contextlib.aclosing(_read_chunks(path, task, progress, size)) as chunks:
                    await self.api.push_blob(digest, chunks, size)
            except TargetError:
                progress.done(task, "failed")
                raise
            progress.done(task, "uploaded")
        return digest


def node_targets(state: DesiredState, *, base_dir: Path | None = None, timeout: float = 10.0,
                 stream_timeout: float = 600.0) -> list[OllamaNode]:
    """One target per [[nodes]] entry, named ollama/<node name>. Relative GGUF paths are
    resolved against `base_dir`, by default the file's own folder. At most
    `reconcile.upload_concurrency` nodes receive blobs at once."""
    if base_dir is None:
        base_dir = state.resolve_path(".")
    gate = asyncio.Semaphore(state.reconcile.upload_concurrency)
    targets = [OllamaNode(wanted_for(state, node, base_dir), node.url, timeout=timeout, stream_timeout=stream_timeout,
                          upload_gate=gate) for node in state.nodes]
    if targets and (note := balancer_note(state)):
        targets[0].notes.append(note)
    return targets

