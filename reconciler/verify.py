"""`ollafleet verify [FILE] [--chat]`: the network as people use it, not as the reconciler reads it.

Checks, one line per problem (exit 1 if any, else 0):
- the balancer lists every declared model and no -v1 helper model (GET /api/tags);
- an employee (an account of role `user`) sees every public model of the file in Open WebUI, under
  the id its Ollama connection lists, and no -v1 helper model. The account is the one named by
  --user-email-env/--user-password-env, else a throwaway employee the admin creates and deletes;
- with --chat: a one-token chat per declared model through the balancer, and per public model
  through Open WebUI as the employee; then each node's /api/ps must show the model loaded with
  the declared num_ctx, pinned (keep_alive -1) if the file says keep_loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import httpx

from balancer.classify import listed_name, normalize_model
from reconciler.config import DesiredState
from reconciler.config.runtime import runtime_params, v1_name
from reconciler.errors import OllafleetError
from reconciler.scrub import scrub
from reconciler.targets.ollama.facts import PsEntry, parse_ps
from reconciler.targets.openwebui.client import OpenWebUIClient
from reconciler.targets.openwebui.target import OpenWebUITarget, openwebui_targets

PINNED = timedelta(days=365)     # a runner expiring later than this was loaded with keep_alive -1
MESSAGES = [{"role": "user", "content": "Say OK."}]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default="desired_state.toml",
                   help="the desired state the network should match (default desired_state.toml)")
    p.add_argument("--chat", action="store_true",
                   help="also send a one-token chat per model through Open WebUI and the balancer, and check "
                        "on the nodes what ran")
    p.add_argument("--user-email-env", metavar="VAR", help="variable holding an employee account's email "
                   "(default: the admin creates a throwaway employee and deletes it afterwards)")
    p.add_argument("--user-password-env", metavar="VAR", help="variable holding that account's password")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")


class Verifier:
    def __init__(self, state: DesiredState, timeout: float = 120.0, balancer_url: str | None = None) -> None:
        self.state = state
        self.balancer_url = balancer_url or state.balancer_public_url()
        self.timeout = timeout
        self.problems: list[str] = []
        self.checked: list[str] = []
        self.helpers = {normalize_model(v1_name(n)) for n in state.models}

    def problem(self, text: str) -> None:
        self.problems.append(scrub(text))

    # ------------------------------------------------------------ the balancer

    async def balancer_listing(self, http: httpx.AsyncClient) -> None:
        url = self.balancer_url
        try:
            r = await http.get(url + "/api/tags")
            r.raise_for_status()
            names = [str(m.get("name") or m.get("model")) for m in r.json().get("models") or []]
        except (httpx.HTTPError, ValueError) as exc:
            self.problem(f"balancer {url}: cannot read /api/tags ({type(exc).__name__}: {exc}); is the daemon running?")
            return
        keys = {normalize_model(n) for n in names}
        for name in self.state.models:
            if normalize_model(name) not in keys:
                self.problem(f'models."{name}": the balancer ({url}) lists it on no node')
        for name in names:
            if normalize_model(name) in self.helpers:
                self.problem(f"balancer {url}: lists the helper model {name}, which people should not pick")
        self.checked.append(f"balancer lists {len(keys)} models")

    async def balancer_chat(self, http: httpx.AsyncClient, name: str) -> None:
        url = self.balancer_url
        body = {"model": name, "messages": MESSAGES, "stream": False, "options": {"num_predict": 1}}
        try:
            r = await http.post(url + "/api/chat", json=body, timeout=self.timeout)
            if r.status_code == 400 and "does not support" in r.text:     # an embedding model
                r = await http.post(url + "/api/embed", json={"model": name, "input": "OK"}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            self.problem(f'models."{name}": a chat through the balancer failed ({type(exc).__name__}: {exc})')
            return
        if r.status_code != 200:
            self.problem(f'models."{name}": a chat through the balancer answered {r.status_code}: {r.text[:200]}')

    # ------------------------------------------------------------ the nodes

    async def runners(self, http: httpx.AsyncClient) -> dict[str, list[PsEntry]]:
        out: dict[str, list[PsEntry]] = {}
        for node in self.state.nodes:
            try:
                r = await http.get(node.url.rstrip("/") + "/api/ps")
                out[node.name] = parse_ps(r.json())
            except (httpx.HTTPError, ValueError):
                out[node.name] = []
        return out

    async def what_ran(self, http: httpx.AsyncClient, name: str) -> None:
        """After a chat: a node holds the model's runner, with the declared num_ctx, pinned if declared."""
        runtime = runtime_params(self.state).get(name)
        num_ctx = runtime.load_options.get("num_ctx") if runtime else None
        pinned = self.state.models[name].keep_loaded
        key = normalize_model(name)
        runners = [(node, e) for node, entries in (await self.runners(http)).items() for e in entries]
        found = [(node, e) for node, e in runners if normalize_model(e.name) in (key, normalize_model(v1_name(name)))]
        # Ollama keeps one runner per weights file: a chat with a model derived from a loaded one
        # (same weights, same num_ctx) runs on that runner, which /api/ps lists under the other name
        kin = same_weights(self.state, name)
        shared = [e for _, e in runners if normalize_model(e.name) in kin
                  and (num_ctx is None or not e.context_length or e.context_length == num_ctx)]
        if not found and not shared:
            self.problem(f'models."{name}": after a chat, no node shows it loaded (/api/ps)')
            return
        now = datetime.now(timezone.utc)
        for node, entry in found:
            if num_ctx is not None and entry.context_length and entry.context_length != num_ctx:
                self.problem(f'models."{name}": runs on {node} with num_ctx {entry.context_length}, '
                             f"the file declares {num_ctx}")
            if pinned and entry.expires_at is not None and entry.expires_at - now < PINNED:
                self.problem(f'models."{name}": keep_loaded, but on {node} it expires at '
                             f"{entry.expires_at:%Y-%m-%d %H:%M} (not loaded with keep_alive -1)")

    # ------------------------------------------------------------ Open WebUI, as an employee

    async def openwebui(self, env: Mapping[str, str], email_var: str | None, password_var: str | None,
                        chat: bool) -> None:
        targets = openwebui_targets(self.state)
        if not targets:
            return
        admin = targets[0]
        assert isinstance(admin, OpenWebUITarget)
        public = [n for n, m in self.state.models.items() if m.openwebui is not None
                  and m.openwebui.visibility == "public"]
        person = OpenWebUIClient(admin.api.url, name="openwebui (employee)", timeout=self.timeout)
        made: str | None = None
        try:
            if email_var and password_var:
                if not env.get(email_var) or not env.get(password_var):
                    self.problem(f"Open WebUI: set {email_var} and {password_var} to the employee's email and password")
                    return
                user = await person.signin(env[email_var], env[password_var])
                who = f"the account in {email_var}"
            else:
                await admin.sign_in()
                email = f"ollafleet-verify-{secrets.token_hex(4)}@example.com"
                user = await admin.api.add_user("ollafleet verify", email, secrets.token_urlsafe(18) + "Aa1!")
                made = str(user.get("id") or "")
                who = "a test employee"
            if user.get("role") != "user":
                self.problem(f"Open WebUI: {who} has the role {user.get('role')!r}, not an employee's (user); "
                             "what it sees is not what employees see")
            person.use_token(str(user.get("token") or ""))
            ids = await person.models_for_me()
            shown = ", ".join(ids) or "nothing"
            for name in public:
                if listed_name(name) not in ids:
                    self.problem(f'models."{name}": an employee does not see it in Open WebUI (listed there as '
                                 f'"{listed_name(name)}" if a node serves it); Open WebUI lists: {shown}')
            for i in ids:
                if normalize_model(i) in self.helpers:
                    self.problem(f"Open WebUI: employees see the helper model {i}")
            self.checked.append(f"{len(public)} public models listed for {who}")
            if chat:
                for name in public:
                    if listed_name(name) in ids:
                        await self._openwebui_chat(person, name)
        except OllafleetError as exc:
            self.problem(f"Open WebUI {admin.api.url}: {exc}")
        finally:
            if made:
                try:
                    await admin.api.delete_user(made)
                except OllafleetError as exc:
                    self.problem(f"Open WebUI: could not delete the test employee ({exc}); delete it by hand")
            await person.close()
            await admin.close()

    async def _openwebui_chat(self, person: OpenWebUIClient, name: str) -> None:
        try:
            await person.chat(listed_name(name))
        except OllafleetError as exc:
            self.problem(f'models."{name}": an employee\'s chat in Open WebUI failed: {exc}')
            return
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            await self.what_ran(http, name)


def _root(state: DesiredState, name: str) -> str:
    """The model whose weights `name` runs on, following `from` through the declared models."""
    models = {normalize_model(n): m for n, m in state.models.items()}
    key, seen = normalize_model(name), set()
    while key in models and models[key].from_ and key not in seen:
        seen.add(key)
        key = normalize_model(models[key].from_ or "")
    return key


def same_weights(state: DesiredState, name: str) -> set[str]:
    """The names (and -v1 helpers) of the declared models that share `name`'s weights."""
    root = _root(state, name)
    names = [n for n in state.models if _root(state, n) == root]
    return {root} | {normalize_model(n) for n in names} | {normalize_model(v1_name(n)) for n in names}


async def verify(state: DesiredState, *, chat: bool = False, env: Mapping[str, str] | None = None,
                 email_var: str | None = None, password_var: str | None = None,
                 timeout: float = 120.0, balancer_url: str | None = None) -> Verifier:
    v = Verifier(state, timeout, balancer_url)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        await v.balancer_listing(http)
        if chat:
            for name in state.models:
                await v.balancer_chat(http, name)
                await v.what_ran(http, name)
    await v.openwebui(env if env is not None else {}, email_var, password_var, chat)
    return v


def cmd_verify(args: argparse.Namespace) -> int:
    import os

    from reconciler.config import load
    from reconciler.errors import ConfigError

    try:
        state = load(args.file)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    v = asyncio.run(verify(state, chat=args.chat, env=dict(os.environ), email_var=args.user_email_env,
                           password_var=args.user_password_env, timeout=args.timeout))
    for line in v.problems:
        print(line)
    if v.problems:
        print(f"verify: {len(v.problems)} problem(s)", file=sys.stderr)
        return 1
    print("verify: ok (" + "; ".join(v.checked) + (", one chat per model answered" if args.chat else "") + ")")
    return 0
