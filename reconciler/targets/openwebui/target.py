"""Open WebUI as a target named `openwebui`: its admin settings and model entries, observed,
diffed and changed through its REST API only (reference: openwebui-api.md §10 recipe).

Each settings object (and each model entry) is written whole, so apply converges a whole group:
the first change of a group writes every declared field of it, the others then find nothing to
do and send nothing. A group is read right before it is written, under a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass

import httpx

from reconciler.config.schema import DesiredState
from reconciler.config.values import Secret
from reconciler.errors import PermanentError, TargetError, TemporaryError
from reconciler.plan.changes import Change
from reconciler.targets.base import AnyTarget, Disruption, Observed, Progress
from reconciler.targets.openwebui.client import AuthRefused, OpenWebUIClient
from reconciler.targets.openwebui.settings import SETTING
from reconciler.targets.openwebui.diff import (Seen, Wanted, Work, diff_openwebui, grants_for,
                                               is_public, model_body, model_fields, patch_group, wanted_for)
from reconciler.targets.same import same

__all__ = ["Credentials", "OpenWebUITarget", "openwebui_targets"]

# session tokens of password sign-ins, per server and credentials: Open WebUI allows 15
# sign-ins in 3 minutes, and the daemon makes a pass every minute
_sessions: dict[tuple[str, str], str] = {}


def _session_key(url: str, email: str, password: str) -> tuple[str, str]:
    return url, hashlib.sha256(f"{email}\0{password}".encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    api_key: Secret | None = None
    email: Secret | None = None
    password: Secret | None = None
    admin_name: str = "Administrator"

    @property
    def has_password(self) -> bool:
        return self.email is not None and self.password is not None


def openwebui_targets(state: DesiredState, *, transport: httpx.AsyncBaseTransport | None = None) -> list[AnyTarget]:
    """The `openwebui` target, or none when the file has no [openwebui] section."""
    wanted = wanted_for(state)
    if wanted is None or state.openwebui is None:
        return []
    ow = state.openwebui
    creds = Credentials(ow.api_key, ow.admin_email, ow.admin_password, ow.admin_name)
    return [OpenWebUITarget(wanted, creds, transport=transport)]


class OpenWebUITarget:
    """One Open WebUI. observe() reads, diff() is pure, apply() converges one group or model."""

    def __init__(self, wanted: Wanted, creds: Credentials, *, name: str = "openwebui", timeout: float = 15.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.wanted = wanted
        self.creds = creds
        self.api = OpenWebUIClient(wanted.url, name=name, timeout=timeout, transport=transport)
        self._signed_in = False
        self._notes: list[str] = []
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def close(self) -> None:
        await self.api.close()

    # ------------------------------------------------------------ credentials

    def _refused(self, exc: AuthRefused) -> str:
        """Why a credential failed, naming its variables, never their values."""
        c = self.creds
        if self.api.api_key_mode and c.api_key is not None:
            if exc.status == 403 and "api key" in exc.detail.lower():
                return (f"API keys are turned off in this Open WebUI, so the key in {c.api_key} cannot be used: "
                        "turn on Admin → Settings → General → API Keys, or sign in with admin_email and admin_password")
            if exc.status == 401:
                return f"Open WebUI refused the API key in {c.api_key} (wrong, revoked or rotated): {exc.detail}"
            return f"the API key in {c.api_key} is not an admin's: {exc.detail}"
        if exc.status in (401, 403) and self._signed_in:
            return f"the account in {c.email} is not allowed to change settings: {exc.detail}"
        return f"Open WebUI refused the admin sign-in with {c.email} and {c.password}: wrong email or password"

    async def sign_in(self) -> None:
        """Sign in as the file's admin (API key, else email and password), once."""
        if not self._signed_in:
            await self._sign_in()

    async def _sign_in(self) -> None:
        c = self.creds
        if c.api_key is not None:
            self.api.use_token(c.api_key.value, api_key=True)
            try:
                await self.api.read_group("auth")      # an admin-only read proves the key
            except AuthRefused as exc:
                if not c.has_password:
                    raise PermanentError(self._refused(exc), target=self.name) from exc
                self._notes.append(f"{self._refused(exc)}; signed in with {c.email} instead")
                self.api.api_key_mode = False
            else:
                self._signed_in = True
                return
        if not c.has_password:
            raise PermanentError("no credentials for Open WebUI: set api_key, or admin_email and admin_password",
                                 target=self.name)
        assert c.email is not None and c.password is not None
        key = _session_key(self.api.url, c.email.value, c.password.value)
        if key in _sessions:
            self.api.use_token(_sessions[key])
            try:
                await self.api.read_group("auth")
                self._signed_in = True
                return
            except AuthRefused:
                _sessions.pop(key, None)
        try:
            user = await self.api.signin(c.email.value, c.password.value)
        except AuthRefused as exc:
            raise PermanentError(self._refused(exc), target=self.name) from exc
        self._take_session(user)

    def _take_session(self, user: dict[str, object]) -> None:
        c = self.creds
        assert c.email is not None and c.password is not None
        if user.get("role") != "admin":
            raise PermanentError(f"the account in {c.email} is not an admin (its role is {user.get('role')!r})",
                                 target=self.name)
        token = str(user.get("token", ""))
        self.api.use_token(token)
        _sessions[_session_key(self.api.url, c.email.value, c.password.value)] = token
        self._signed_in = True

    async def _create_admin(self) -> None:
        c = self.creds
        if not c.has_password:
            raise PermanentError("a fresh Open WebUI needs its admin created: set admin_email and admin_password",
                                 target=self.name)
        assert c.email is not None and c.password is not None
        if (await self.api.public_config()).get("onboarding"):
            try:
                user = await self.api.signup(c.admin_name, c.email.value, c.password.value)
            except AuthRefused as exc:
                raise PermanentError(f"Open WebUI refused to create the admin from {c.email}: {exc.detail}",
                                     target=self.name) from exc
            self._take_session(user)
        else:                                       # someone created it meanwhile
            self._signed_in = False
            await self._sign_in()

    # ------------------------------------------------------------ observe / diff / apply

    async def observe(self) -> Observed[Seen]:
        self._notes = []
        try:
            public = await self.api.public_config()
        except TargetError as exc:
            return Observed(self.name, error=f"unreachable: {exc}")
        version = str(public.get("version", ""))
        if version and not version.startswith("0.12."):
            self._notes.append(f"Open WebUI {version}: ollafleet was verified against 0.12.4 only")
        if public.get("onboarding"):
            if not self.creds.has_password:
                return Observed(self.name, error="this Open WebUI has no admin yet, and an API key cannot exist "
                                "before one: set admin_email and admin_password so ollafleet creates the admin")
            return Observed(self.name, Seen(version, fresh=True), notes=list(self._notes))
        try:
            await self._sign_in()
            groups = await asyncio.gather(*(self.api.read_group(g) for g in self.wanted.groups()))
            entries = await asyncio.gather(*(self.api.model(m.id) for m in self.wanted.models))
            others = [m.other_id for m in self.wanted.models if m.other_id]
            strays = dict(zip(others, await asyncio.gather(*(self.api.model(i) for i in others))))
        except AuthRefused as exc:
            return Observed(self.name, error=self._refused(exc), notes=list(self._notes))
        except TargetError as exc:
            return Observed(self.name, error=str(exc), notes=list(self._notes))
        listed: frozenset[str] | None = None
        if self.wanted.models or "task_model" in self.wanted.settings or self.wanted.read_all:
            try:
                listed = frozenset(await self.api.listed_models())
            except TargetError as exc:
                self._notes.append(f"could not read the models the Ollama connection lists: {exc}")
        seen = Seen(version, False, dict(zip(self.wanted.groups(), groups)),
                    {m.id: e for m, e in zip(self.wanted.models, entries)}, listed,
                    {i: e for i, e in strays.items() if e is not None})
        return Observed(self.name, seen, notes=list(self._notes))

    def diff(self, observed: Observed[Seen]) -> tuple[list[Change[Work]], list[str]]:
        seen = observed.data
        assert seen is not None
        return diff_openwebui(self.name, self.wanted, seen)

    def disrupts(self, change: Change[Work]) -> Disruption | None:
        return None          # Open WebUI settings never stop a node from serving a model

    def abandonable(self, change: Change[Work]) -> bool:
        return False         # a settings write is short: it runs to its end

    async def apply(self, change: Change[Work], progress: Progress) -> None:
        work = change.data
        assert work is not None
        try:
            if work.kind == "admin":
                async with self._locks["admin"]:
                    if not self._signed_in:
                        await self._create_admin()
                return
            if not self._signed_in:
                await self._sign_in()
            if work.kind == "stray":
                async with self._locks["model:" + work.group]:
                    if await self.api.model(work.group) is not None:
                        await self.api.delete_model(work.group)
            elif work.kind == "group":
                async with self._locks["group:" + work.group]:
                    await self._converge_group(work.group)
            else:
                assert work.model is not None
                async with self._locks["model:" + work.model.id]:
                    await self._converge_model(work)
        except AuthRefused as exc:      # sign-in problems were explained already; this is a route's refusal
            raise PermanentError(str(exc), target=self.name) from exc

    async def _converge_group(self, group: str) -> None:
        current = await self.api.read_group(group)
        patched = patch_group(group, current, self.wanted)
        if same(patched, current):
            return
        stored = await self.api.write_group(group, patched)
        for path, value in self.wanted.settings.items():
            key = SETTING[path].key
            if SETTING[path].group == group and not same(stored.get(key), value):
                raise PermanentError(f"Open WebUI did not store settings.{path} = {value!r} "
                                     f"(it kept {stored.get(key)!r})", target=self.name)

    async def _converge_model(self, work: Work) -> None:
        model = work.model
        assert model is not None
        entry = await self.api.model(model.id)
        if entry is None:
            await self.api.create_model(model_body(model, None))
            entry = await self.api.model(model.id)
            if entry is None:
                raise PermanentError(f'Open WebUI did not keep the entry of "{model.id}"', target=self.name)
        elif any(sub != ("visibility",) for sub, _, _ in model_fields(model, entry)):
            try:
                await self.api.update_model(model_body(model, entry))
            except AuthRefused as exc:
                if exc.status != 401:
                    raise
                raise TemporaryError(f'the entry of "{model.id}" vanished while it was updated '
                                     f"({exc.detail}); the next pass creates it", target=self.name) from exc
            entry = await self.api.model(model.id) or {}
        if is_public(entry.get("access_grants")) != model.public:
            entry = await self.api.set_model_access(model.id, str(entry.get("name") or model.id),
                                                    grants_for(model, entry.get("access_grants")))
        left = model_fields(model, entry)
        if left:
            sub, before, after = left[0]
            raise PermanentError(f'Open WebUI did not store models."{model.id}".{".".join(sub)} = {after!r} '
                                 f"(it kept {before!r})", target=self.name)
