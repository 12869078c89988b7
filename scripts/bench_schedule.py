#!/usr/bin/env python3
"""Office days replayed against simulated GPU nodes (127.0.0.1 only), one run, three placements.

Nodes: 3 simulated 24 GB GPUs, OLLAMA_NUM_PARALLEL=1 with Ollama's queue behind the slot;
codestral:22b and qwq:32b do not fit together, a load takes ~8 s (codestral) / ~12 s (qwq),
prompt evaluation 2,000 tokens/s (uncached part only), generation 30 tokens/s, 250-token
answers. Each user runs two 6-turn chats, pasting ~300 words of code per turn and reading
the answer for 10-30 s. Time runs compressed: `--scale` real seconds per modelled second
(0.1: 10x); every number printed is in modelled seconds.

Days:   stable   6 users, 4 on codestral, 2 on qwq, all day
        shift    the same, but two codestral users' second chat is on qwq
        single   9 users, all on codestral
        death    the stable day, but the node holding the only loaded qwq copy dies at 100 s
                 (connections refused from then on; static: node 3)
Placements:
        first-free  the peer's rule: first free node in list order, else 503 (retried after 2 s)
        static      pinned by hand: codestral users on nodes 1-2, qwq users on node 3
                    (single day: three users per node), straight to Ollama's queue
        greedy      a reference, in process: each request straight to the node whose first
                    token comes soonest, from perfect knowledge of what every node holds and
                    has queued (and which node is dead)
        ollafleet   the balancer with --queue-timeout 600 (its own queue, cost-based choice)
        ollafleet-handoff  (with --placements) the same, but a request whose best node is
                    busy with its model loaded goes to that node's Ollama queue at once

Model parameters are those of a desired-state file (`--file`, default the repo's
desired_state.toml), as in a deployment: every request carries the model's Open WebUI
`params` as options (Open WebUI sends them on each chat, whichever placement), and the
balancer gets the file's runtime parameters (a `keep_loaded` model is requested with
keep_alive -1; num_ctx always the declared one). `--file ''`: no parameters at all.

Prints per day and placement: mean / p90 time to first token (as users feel it, retries
included), 503s, model loads (from load_duration) in all and on the busiest node, KV reuse
(share of prompt tokens the nodes did not have to evaluate), turns given up (a dead node).

`--tasks on` (or `both`: off, then on) adds Open WebUI 0.12.4's default background tasks: after
every answer a follow-up request to the task model (codestral:22b), after a new chat's first
answer a title and a tags request; each one user message shaped like Open WebUI's default
templates (a `### Task:` heading, instructions, the JSON answer key, the chat's last 6
messages in a <chat_history> block), short answers, sent one after the other in the background
while the user reads, as Open WebUI does. People's times and loads are then people's only;
the extra columns give the tasks' mean / p90 latency (send to last byte) and their loads. Where
tasks go: static, to a codestral node (the user's own for codestral users); first-free, like
any request; ollafleet, through the balancer, which knows them (balancer/tasks.py).

    .venv/bin/python scripts/bench_schedule.py [--scale 0.1] [--days stable,shift,single,death] [--file F]
                                               [--tasks off|on|both]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from balancer import Balancer, NodeSpec, Settings  # noqa: E402
from balancer.params import ModelParams  # noqa: E402
from reconciler.config import load  # noqa: E402
from reconciler.daemon.wiring import model_params  # noqa: E402
from simulator import Simulator, Timing  # noqa: E402
from simulator.timing import tokenize  # noqa: E402

CODE, QWQ = "codestral:22b", "qwq:32b"
NODES = 3
TURNS = 6
CHATS = 2
PROMPT_TPS = 2000.0
TIMING = Timing(load_delay=12.5, prompt_tps=PROMPT_TPS, gen_tps=30.0, warm_load=0.05)
WORDS = ("def", "return", "self", "value", "list", "for", "in", "if", "else", "import", "class",
         "data", "result", "index", "count", "items", "key", "None", "True", "print", "range")


@dataclass(frozen=True)
class Declared:
    """What a desired-state file says about the models: what Open WebUI sends with each chat
    (per model), and what the balancer puts into requests."""
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    balancer: dict[str, ModelParams] = field(default_factory=dict)


def declared(path: str) -> Declared:
    if not path:
        return Declared()
    state = load(path, skip_env=True)
    sent = {name: dict(m.openwebui.params) for name, m in state.models.items()
            if m.openwebui is not None and m.openwebui.params}
    return Declared(sent, model_params(state))


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    rejected: int = 0
    loads: int = 0
    node_loads: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    evaluated: float = 0.0
    failed: int = 0
    task_latency: list[float] = field(default_factory=list)  # --tasks on: send to last byte
    task_loads: int = 0
    task_failed: int = 0
    given_up: int = 0  # turns whose node refused connections (static placement, death day)


def code_paste(rng: random.Random, words: int = 300) -> str:
    lines, line = [], []
    for _ in range(words):
        line.append(rng.choice(WORDS) + rng.choice(("", "()", "_x", "[i]", ":", ",")))
        if len(line) >= rng.randint(4, 9):
            lines.append("    " * rng.randint(0, 2) + " ".join(line))
            line = []
    lines.append(" ".join(line))
    return "Why does this fail?\n```python\n" + "\n".join(lines) + "\n```"


def rendered_tokens(messages: list[dict[str, str]]) -> int:
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return len(tokenize(text))


def day_plan(day: str) -> list[list[str]]:
    """Per user: the model of each of its chats."""
    if day == "death":
        return day_plan("stable")
    if day == "single":
        return [[CODE] * CHATS for _ in range(9)]
    users = [[CODE] * CHATS for _ in range(4)] + [[QWQ] * CHATS for _ in range(2)]
    if day == "shift":
        users[2][1] = users[3][1] = QWQ
    return users


class FirstFree:
    """The peer's rule, client side: the first free node in list order, else 503."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.busy = [False] * len(urls)
        self.dead: set[int] = set()  # nodes that refused a connection

    def take(self) -> int | None:
        for i, b in enumerate(self.busy):
            if not b and i not in self.dead:
                self.busy[i] = True
                return i
        return None

    def release(self, node: int) -> None:
        self.busy[node] = False


async def user(uid: int, chats: list[str], place: str, urls: list[str],
               peer: FirstFree | Greedy | None,
               session: aiohttp.ClientSession, scale: float, res: Result, day: str,
               decl: Declared, tasks: OpenWebUITasks | None = None) -> None:
    rng = random.Random(f"{day}-{uid}")
    await asyncio.sleep(rng.uniform(0, 30) * scale)
    for c, model in enumerate(chats):
        messages: list[dict[str, str]] = []
        for _turn in range(TURNS):
            messages.append({"role": "user", "content": code_paste(rng)})
            body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
            if model in decl.sent:
                body["options"] = decl.sent[model]
            sent = time.monotonic()
            while True:
                node: int | None = None
                if place == "static":
                    if day == "single":
                        url = urls[uid % NODES]
                    else:
                        url = urls[2] if model == QWQ else urls[uid % 2]
                elif place == "first-free":
                    assert isinstance(peer, FirstFree)
                    node = peer.take()
                    if node is None:
                        res.rejected += 1
                        await asyncio.sleep(2.0 * scale)
                        continue
                    url = urls[node]
                elif place == "greedy":
                    assert isinstance(peer, Greedy)
                    node = peer.take(model, rendered_tokens(messages))
                    url = urls[node]
                else:
                    url = urls[0]
                try:
                    answer = await chat(session, url, body, uid, sent, scale, res)
                except aiohttp.ClientError:  # a dead node (death day): refused, or cut
                    answer = refused(peer, node, res)
                    if answer is None:
                        continue
                finally:
                    if node is not None and peer is not None:
                        peer.release(node)
                if answer == GIVEN_UP:
                    break
                if answer is None:  # 503 from the balancer
                    res.rejected += 1
                    await asyncio.sleep(2.0 * scale)
                    continue
                break
            if answer == GIVEN_UP:
                messages.pop()  # the user gives up this question and asks the next one
                await asyncio.sleep(rng.uniform(10, 30) * scale)
                continue
            res.prompt_tokens += rendered_tokens(messages)
            messages.append({"role": "assistant", "content": answer})
            if tasks is not None:
                tasks.after_answer(uid, model, messages, first=len(messages) == 2)
            await asyncio.sleep(rng.uniform(10, 30) * scale)


async def chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any], uid: int,
               sent: float, scale: float, res: Result) -> str | None:
    headers = {"X-OpenWebUI-User-Id": f"user-{uid}"}
    async with session.post(url + "/api/chat", json=body, headers=headers) as r:
        if r.status == 503:
            await r.read()
            return None
        if r.status != 200:
            res.failed += 1
            raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:200]!r}")
        first = True
        text: list[str] = []
        final: dict[str, Any] = {}
        async for line in r.content:
            if first:
                res.ttft.append((time.monotonic() - sent) / scale)
                first = False
            obj = json.loads(line)
            text.append(obj.get("message", {}).get("content", ""))
            if obj.get("done"):
                final = obj
    answer = "".join(text)
    if final.get("load_duration", 0) >= 1e9:
        res.loads += 1
        node = answer.split(" from ", 1)[-1].split(":", 1)[0]  # "Simulated answer from gpu-2:"
        res.node_loads[node] = res.node_loads.get(node, 0) + 1
    res.evaluated += final.get("prompt_eval_duration", 0) / 1e9 * PROMPT_TPS
    return answer


# -- the death day and the greedy reference (issue 23) -------------------------------------
GIVEN_UP = "\0given up"
DEATH_AT = 100.0  # modelled seconds into the day
LOAD_S = {CODE: 8.0, QWQ: 12.0}  # the simulated loads (TIMING and the models' sizes)
ANSWER_S = 250 / 30.0  # a 250-token answer at 30 tokens/s


class Greedy:
    """The greedy rule with perfect knowledge, in process: each request goes straight to the
    node (Ollama's own queue) whose first token comes soonest, from what every node holds
    (read from the simulator), the work already sent to it, and which nodes are dead."""

    def __init__(self, nodes: list[Any], scale: float) -> None:
        self.nodes = nodes
        self.scale = scale
        self.dead: set[int] = set()
        self.free_at = [0.0] * len(nodes)  # modelled clock: when its queue empties
        self.last: list[str | None] = [None] * len(nodes)  # the model its queue ends with
        self.out = [0] * len(nodes)

    def now(self) -> float:
        return time.monotonic() / self.scale

    def take(self, model: str, tokens: int) -> int:
        now = self.now()
        best, best_ttft, best_busy = 0, float("inf"), 0.0
        for i, node in enumerate(self.nodes):
            if i in self.dead:
                continue
            held = self.last[i] if self.out[i] else next(iter(node.loaded_models()), None)
            load = 0.0 if held == model else LOAD_S[model]
            start = max(0.0, self.free_at[i] - now) if self.out[i] else 0.0
            ttft = start + load + tokens / PROMPT_TPS
            if ttft < best_ttft:
                best, best_ttft, best_busy = i, ttft, ttft + ANSWER_S
        self.free_at[best] = now + best_busy
        self.last[best] = model
        self.out[best] += 1
        return best

    def release(self, node: int) -> None:
        self.out[node] -= 1


def refused(peer: FirstFree | Greedy | None, node: int | None, res: Result) -> str | None:
    """A node refused the connection: a router forgets it and tries another (None); a static
    placement has nowhere else to go, so its user gives the turn up."""
    if peer is not None and node is not None:
        peer.dead.add(node)
        return None
    res.given_up += 1
    return GIVEN_UP


async def death(place: str, nodes: list[Any], peer: FirstFree | Greedy | None,
                scale: float) -> None:
    """At DEATH_AT, switch off the node that holds the only loaded qwq copy (static: node 3)."""
    await asyncio.sleep(DEATH_AT * scale)
    holders = [i for i, n in enumerate(nodes) if QWQ in n.loaded_models()]
    victim = NODES - 1 if place == "static" or len(holders) != 1 else holders[0]
    nodes[victim].set_fault("refuse")
    if isinstance(peer, Greedy):
        peer.dead.add(victim)  # perfect knowledge
    print(f"{'':8} {place}: {nodes[victim].name} dies (held {nodes[victim].loaded_models()}; "
          f"qwq loaded on {len(holders)} node(s))", flush=True)


async def run(day: str, place: str, scale: float, decl: Declared, with_tasks: bool = False
              ) -> Result:
    res = Result()
    plan = day_plan(day)
    async with Simulator() as sim:
        nodes = [await sim.add_node(name=f"gpu-{i + 1}", models=[CODE, QWQ],
                                    timing=TIMING.scaled(scale), reply_tokens=250,
                                    max_queue=512) for i in range(NODES)]
        urls = [n.url for n in nodes]
        balancer: Balancer | None = None
        if place.startswith("ollafleet"):
            balancer = Balancer(Settings(silence_timeout=120 * scale, queue_timeout=600 * scale,
                                         poll_interval=5 * scale, model_params=decl.balancer,
                                         time_scale=scale, **task_settings(with_tasks, scale)),
                                [NodeSpec(n.name, n.url) for n in nodes])
            if place == "ollafleet-handoff":  # hand to a busy node's own queue instead
                balancer.fleet.knowledge.hand_off = True
            await balancer.start("127.0.0.1", 0)
            urls = [balancer.url]
        peer: FirstFree | Greedy | None = FirstFree(urls) if place == "first-free" else \
            Greedy(nodes, scale) if place == "greedy" else None
        killer = asyncio.create_task(death(place, nodes, peer, scale)) if day == "death" else None
        timeout = aiohttp.ClientTimeout(total=None)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                tasks = OpenWebUITasks(place, urls, peer, session, scale, res, decl, day) \
                    if with_tasks else None
                await asyncio.gather(*(user(i, chats, place, urls, peer, session, scale, res,
                                            day, decl, tasks) for i, chats in enumerate(plan)))
                if tasks is not None:
                    await tasks.drain()
        finally:
            if killer is not None:
                killer.cancel()
            if balancer is not None:
                await balancer.stop(drain_timeout=1.0)
    return res


# -- Open WebUI's background tasks (--tasks) --------------------------------------------------

TASK_KEYS = {"follow_ups": '{ "follow_ups": ["a question", "another"] }',
             "title": '{ "title": "a short title" }', "tags": '{ "tags": ["a", "b"] }'}
TASK_ANSWER = 40  # tokens: a short JSON answer
TASK_WORDS = 180  # instruction words around the chat: about the size of Open WebUI's defaults


def task_prompt(kind: str, messages: list[dict[str, str]]) -> str:
    """A prompt shaped like Open WebUI's default task templates (not their text): heading,
    instructions, the JSON answer key, then the chat's last 6 messages."""
    rng = random.Random(kind)
    words = " ".join(rng.choice(("keep", "the", "answer", "short", "and", "relevant", "use",
                                 "chat", "language", "json", "only", "no", "extra", "text"))
                     for _ in range(TASK_WORDS))
    history = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages[-6:])
    return (f"### Task:\nBackground job: {kind}.\n### Guidelines:\n{words}\n### Output:\n"
            f"JSON format: {TASK_KEYS[kind]}\n### Chat History:\n<chat_history>\n{history}\n"
            "</chat_history>")


def task_settings(with_tasks: bool, scale: float) -> dict[str, Any]:
    from balancer.tasks import TaskIdent
    return {"tasks": TaskIdent(model=CODE), "task_timeout": 60 * scale} if with_tasks else {}


class OpenWebUITasks:
    """What Open WebUI 0.12.4 sends after an answer with its defaults: follow-ups after every
    answer, then title and tags after a new chat's first; one after the other, in the background."""

    def __init__(self, place: str, urls: list[str], peer: FirstFree | None,
                 session: aiohttp.ClientSession, scale: float, res: Result, decl: Declared,
                 day: str) -> None:
        self.place, self.urls, self.peer, self.session, self.day = place, urls, peer, session, day
        self.scale, self.res, self.decl = scale, res, decl
        self.running: list[asyncio.Task[None]] = []

    def after_answer(self, uid: int, model: str, messages: list[dict[str, str]], first: bool) -> None:
        kinds = ["follow_ups"] + (["title", "tags"] if first else [])
        self.running.append(asyncio.create_task(self._send(uid, model, list(messages), kinds)))

    async def drain(self) -> None:
        await asyncio.gather(*self.running)

    def _url(self, uid: int) -> str:
        if self.place == "static":  # a codestral node: the user's own when it is one
            return self.urls[uid % NODES] if self.day == "single" else self.urls[uid % 2]
        return self.urls[0]

    async def _send(self, uid: int, model: str, messages: list[dict[str, str]],
                    kinds: list[str]) -> None:
        for kind in kinds:
            options = {**self.decl.sent.get(CODE, {}), "num_predict": TASK_ANSWER}
            body = {"model": CODE, "stream": False, "options": options,
                    "messages": [{"role": "user", "content": task_prompt(kind, messages)}]}
            sent = time.monotonic()
            while True:
                node = None
                url = self._url(uid)
                if self.place == "first-free":
                    assert self.peer is not None
                    node = self.peer.take()
                    if node is None:
                        await asyncio.sleep(2.0 * self.scale)
                        continue
                    url = self.urls[node]
                try:
                    async with self.session.post(url + "/api/chat", json=body, headers={
                            "X-OpenWebUI-User-Id": f"user-{uid}"}) as r:
                        data = await r.read()
                finally:
                    if node is not None and self.peer is not None:
                        self.peer.busy[node] = False
                if r.status == 503 and self.place == "first-free":
                    await asyncio.sleep(2.0 * self.scale)
                    continue
                break
            if r.status != 200:
                self.res.task_failed += 1  # Open WebUI drops that title / tags / follow-ups
                continue
            self.res.task_latency.append((time.monotonic() - sent) / self.scale)
            if json.loads(data).get("load_duration", 0) >= 1e9:
                self.res.task_loads += 1


async def main_tasks(args: argparse.Namespace, decl: Declared) -> None:
    """--tasks on|both: people's mean / p90 time to first token and loads, tasks off and on,
    with the tasks' latency and loads."""
    modes = [False, True] if args.tasks == "both" else [True]
    print(f"scale {args.scale}: times are modelled seconds; tasks: Open WebUI's defaults "
          "(follow-ups after every answer, title and tags after a chat's first)")
    print(f"{'day':8} {'placement':11} {'tasks':5} {'mean':>6} {'p90':>6} {'503s':>5} "
          f"{'loads':>5} {'KV reuse':>8} {'tasks':>5} {'t mean':>6} {'t p90':>6} {'t loads':>7} "
          f"{'t fail':>6}")
    for day in args.days.split(","):
        for place in args.placements.split(","):
            for on in modes:
                r = await run(day, place, args.scale, decl, with_tasks=on)
                reuse = 1 - r.evaluated / r.prompt_tokens if r.prompt_tokens else 0.0
                lat = r.task_latency
                print(f"{day:8} {place:11} {'on' if on else 'off':5} {statistics.mean(r.ttft):6.2f} "
                      f"{p90(r.ttft):6.1f} {r.rejected:5d} {r.loads:5d} {reuse:8.0%} "
                      f"{len(lat):5d} {statistics.mean(lat) if lat else 0:6.1f} "
                      f"{p90(lat) if lat else 0:6.1f} {r.task_loads:7d} {r.task_failed:6d}",
                      flush=True)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else (values or [0])[0]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.1, help="real seconds per modelled second")
    ap.add_argument("--days", default="stable,shift,death")
    ap.add_argument("--placements", default="first-free,static,greedy,ollafleet")
    ap.add_argument("--file", default=str(ROOT / "desired_state.toml"),
                    help="desired-state file whose model parameters are used ('': none)")
    ap.add_argument("--tasks", choices=("off", "on", "both"), default="off",
                    help="Open WebUI's default background tasks (title, tags, follow-ups)")
    args = ap.parse_args()
    if args.tasks != "off":
        await main_tasks(args, declared(args.file))
        return
    decl = declared(args.file)
    print("model parameters: " + (", ".join(f"{m} {o}" for m, o in decl.sent.items())
                                  + f" (from {Path(args.file).name})" if args.file else "none"))
    print(f"scale {args.scale}: one modelled second takes {args.scale:g} s; times below are "
          "modelled seconds")
    print(f"{'day':8} {'placement':11} {'mean':>6} {'p90':>6} {'503s':>5} {'loads':>5} "
          f"{'max/node':>8} {'KV reuse':>8} {'wall':>6} {'given up':>8}")
    for day in args.days.split(","):
        rows: dict[str, Result] = {}
        for place in args.placements.split(","):
            t0 = time.monotonic()
            r = rows[place] = await run(day, place, args.scale, decl)
            reuse = 1 - r.evaluated / r.prompt_tokens if r.prompt_tokens else 0.0
            print(f"{day:8} {place:11} {statistics.mean(r.ttft):6.1f} {p90(r.ttft):6.1f} "
                  f"{r.rejected:5d} {r.loads:5d} {max(r.node_loads.values(), default=0):8d} "
                  f"{reuse:8.0%} {time.monotonic() - t0:5.0f}s {r.given_up:8d}",
                  flush=True)
        if "ollafleet" in rows and len(rows) > 1:
            ours = statistics.mean(rows["ollafleet"].ttft)
            ratios = [f"{statistics.mean(rows[p].ttft) / ours:.2f}x {p}" for p in rows
                      if p != "ollafleet"]
            print(f"{'':8} ollafleet is faster than: {', '.join(ratios)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
