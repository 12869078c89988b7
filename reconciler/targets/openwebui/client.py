"""A typed async client for Open WebUI 0.12.4's REST API (reference: openwebui-api.md).

This is the only Open WebUI module that catches httpx errors: an unreachable server or a 5xx
becomes a TemporaryError, a refused credential an AuthRefused, any other 4xx a PermanentError,
each chained with `from exc`. Messages carry Open WebUI's `detail`, never a credential.
"""

from __future__ import annotations

from typing import Any

import httpx

from reconciler.errors import PermanentError, TemporaryError
from reconciler.scrub import cut, remember
from reconciler.targets.deadline import Deadline

# the settings objects Open WebUI reads and writes whole: group → (GET path, POST path)
GROUPS: dict[str, tuple[str, str]] = {
    "auth": ("/api/v1/auths/admin/config", "/api/v1/auths/admin/config"),
    "task": ("/api/v1/tasks/config", "/api/v1/tasks/config/update"),
    "code": ("/api/v1/configs/code_execution", "/api/v1/configs/code_execution"),
    "ollama": ("/ollama/config", "/ollama/config/update"),
    "openai": ("/openai/config", "/openai/config/update"),
}

# an API key may not send these (403 "A human administrator session is required ...")
MFA_FIELDS = ("ENABLE_MFA", "MFA_ALLOW_OAUTH_BYPASS", "MFA_ALLOW_TRUSTED_HEADER_BYPASS")

# requests that change nothing on the server although they are POSTs
_NOT_WRITES = ("/api/v1/auths/signin",)


class AuthRefused(PermanentError):
    """Open WebUI refused the credential (401/403, or a wrong password)."""

    def __init__(self, message: str, *, status: int, detail: str, target: str = "") -> None:
        self.status = status
        self.detail = detail
        super().__init__(message, target=target)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return cut(response.text, 200)
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's 422: [{loc, msg}, ...]
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
                         for d in detail if isinstance(d, dict))
    return cut(str(detail), 300)


class OpenWebUIClient:
    """One Open WebUI server. `writes` lists every request that could change it ("POST /path").
    `timeout` bounds each connect and read; twice `timeout` bounds a whole call, whatever the
    server sends."""

    def __init__(self, url: str, *, name: str = "openwebui", timeout: float = 15.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.writes: list[str] = []
        self.api_key_mode = False
        # trust_env=False: no HTTP(S)_PROXY or .netrc from the environment sees the admin's key or password
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport, trust_env=False,
                                       event_hooks={"request": [self._count]})

    async def _count(self, request: httpx.Request) -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.url.path not in _NOT_WRITES:
            self.writes.append(f"{request.method} {request.url.path}")

    async def close(self) -> None:
        await self._http.aclose()

    def use_token(self, token: str, *, api_key: bool = False) -> None:
        """Send `token` (a session JWT or an sk- API key) as the bearer from now on."""
        remember(token)      # a server that echoes it back cannot make ollafleet show it
        self._http.headers["Authorization"] = f"Bearer {token}"
        self.api_key_mode = api_key

    # ------------------------------------------------------------ plumbing

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request within its deadline; a server that cannot be reached or is too slow is a
        TemporaryError naming it."""
        deadline = Deadline(total=2 * self.timeout)
        try:
            async with deadline:
                return await self._http.request(method, path, **kw)
        except (httpx.TimeoutException, TimeoutError) as exc:
            late = deadline.expired_text() if isinstance(exc, TimeoutError) else "no answer in time"
            raise TemporaryError(f"Open WebUI at {self.url} did not answer {method} {path}: {late}",
                                 target=self.name) from exc
        except httpx.HTTPError as exc:   # refused, reset, not HTTP at all
            raise TemporaryError(f"cannot reach Open WebUI at {self.url}: {type(exc).__name__}: {exc}",
                                 target=self.name) from exc

    async def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                    missing_ok: bool = False) -> Any:
        response = await self._send(method, path, json=json, params=params)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 500:
            raise TemporaryError(f"Open WebUI answered {response.status_code} to {method} {path}: "
                                 f"{_detail(response)}", target=self.name)
        if response.status_code in (401, 403):
            detail = _detail(response)
            raise AuthRefused(f"Open WebUI refused {method} {path} ({response.status_code}): {detail}",
                              status=response.status_code, detail=detail, target=self.name)
        if response.status_code >= 400:
            raise PermanentError(f"Open WebUI answered {response.status_code} to {method} {path}: "
                                 f"{_detail(response)}", target=self.name)
        try:
            return response.json()
        except ValueError as exc:
            raise TemporaryError(f"Open WebUI sent a non-JSON answer to {method} {path} "
                                 f"(is {self.url} really Open WebUI?)", target=self.name) from exc

    # ------------------------------------------------------------ accounts

    async def public_config(self) -> dict[str, Any]:
        """GET /api/config, no auth: version, and `onboarding: true` while there is no user."""
        body = await self._call("GET", "/api/config")
        if not isinstance(body, dict):
            raise TemporaryError(f"{self.url}/api/config is not Open WebUI's", target=self.name)
        return body

    async def signin(self, email: str, password: str) -> dict[str, Any]:
        response = await self._send("POST", "/api/v1/auths/signin", json={"email": email, "password": password})
        if response.status_code == 429:
            raise TemporaryError("Open WebUI rate-limits sign-ins (15 per 3 minutes): try again later",
                                 target=self.name, retry_after=60.0)
        if response.status_code in (400, 401, 403):
            raise AuthRefused("wrong email or password", status=response.status_code,
                              detail=_detail(response), target=self.name)
        if response.status_code >= 400:
            raise TemporaryError(f"Open WebUI answered {response.status_code} to sign-in: {_detail(response)}",
                                 target=self.name)
        return dict(response.json())

    async def signup(self, name: str, email: str, password: str) -> dict[str, Any]:
        return dict(await self._call("POST", "/api/v1/auths/signup",
                                     json={"name": name, "email": email, "password": password}))

    async def add_user(self, name: str, email: str, password: str, role: str = "user") -> dict[str, Any]:
        """POST /api/v1/auths/add (admin): a new account; the answer carries its session token."""
        return dict(await self._call("POST", "/api/v1/auths/add",
                                     json={"name": name, "email": email, "password": password, "role": role}))

    async def delete_user(self, user_id: str) -> None:
        await self._call("DELETE", f"/api/v1/users/{user_id}")

    # ------------------------------------------------------------ as a person sees it

    async def models_for_me(self) -> list[str]:
        """Ids of GET /api/models: the models the signed-in account can pick in a chat."""
        body = await self._call("GET", "/api/models")
        return [str(m.get("id")) for m in (body or {}).get("data") or [] if isinstance(m, dict)]

    async def chat(self, model_id: str, text: str = "Say OK.") -> str:
        """One short, non-streamed chat as the signed-in account (POST /api/chat/completions)."""
        body = await self._call("POST", "/api/chat/completions", json={
            "model": model_id, "stream": False, "max_tokens": 1, "messages": [{"role": "user", "content": text}]})
        choices = (body or {}).get("choices") or [{}]
        return str(((choices[0] or {}).get("message") or {}).get("content") or "")

    # ------------------------------------------------------------ settings

    async def read_group(self, group: str) -> dict[str, Any]:
        return dict(await self._call("GET", GROUPS[group][0]))

    async def write_group(self, group: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a whole settings object back (these routes replace the object)."""
        body = dict(body)
        if group == "auth":
            body.pop("sessions_revoked", None)
            if self.api_key_mode:
                for key in MFA_FIELDS:
                    body.pop(key, None)
        return dict(await self._call("POST", GROUPS[group][1], json=body))

    # ------------------------------------------------------------ models

    async def model(self, model_id: str) -> dict[str, Any] | None:
        """The model entry (override row) of `model_id`, or None when there is none."""
        body = await self._call("GET", "/api/v1/models/model", params={"id": model_id}, missing_ok=True)
        return dict(body) if isinstance(body, dict) else None

    async def all_models(self) -> list[dict[str, Any]]:
        """Every saved model row (GET /api/v1/models/all, admin): overrides and workspace presets."""
        body = await self._call("GET", "/api/v1/models/all")
        rows = body.get("data", []) if isinstance(body, dict) else body
        return [r for r in rows or [] if isinstance(r, dict)]

    async def listed_models(self) -> list[str]:
        """Ids the connections list (GET /api/models/base, admin): what Open WebUI can serve."""
        body = await self._call("GET", "/api/models/base")
        return [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)]

    async def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", "/api/v1/models/create", json=body))

    async def update_model(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", "/api/v1/models/model/update", json=body))

    async def delete_model(self, model_id: str) -> None:
        await self._call("POST", "/api/v1/models/model/delete", json={"id": model_id})

    async def set_model_access(self, model_id: str, name: str, grants: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace all access grants of a model entry."""
        return dict(await self._call("POST", "/api/v1/models/model/access/update",
                                     json={"id": model_id, "name": name, "access_grants": grants}))
