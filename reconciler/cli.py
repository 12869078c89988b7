"""The `ollafleet` command: argument parsing, exit codes, output. No reconcile logic here."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from importlib.metadata import PackageNotFoundError, version

from rich.console import Console

from reconciler import balancer_reach
from reconciler.balancer_reach import balancer_notes, with_notes
from reconciler.config import DesiredState, load
from reconciler.config.load import Extra
from reconciler.daemon.live import restart_notes
from reconciler.errors import ConfigError, OllafleetError
from reconciler.plan import engine, render
from reconciler.plan.changes import ChangeResult, PassReport, Plan, TargetProblem
from reconciler.plan.one_pass import run_pass, suspend_notes
from reconciler.progress import BarProgress, LogProgress
from reconciler.targets import AnyTarget, Progress, build_targets

DEFAULT_FILE = "desired_state.toml"
FILE_HELP = "the desired state (default: ./desired_state.toml)"
TargetFactory = Callable[[DesiredState], list[AnyTarget]]


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def _load(path: str, *, skip_env: bool = False, extra: Extra | None = None) -> DesiredState | None:
    try:
        return load(path, skip_env=skip_env, extra=extra)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


async def _close(targets: Sequence[AnyTarget]) -> None:
    await asyncio.gather(*(t.close() for t in targets), return_exceptions=True)


async def make_plan(state: DesiredState, factory: TargetFactory = build_targets) -> Plan:
    targets = factory(state)
    try:
        the_plan, notes, restart = await asyncio.gather(engine.plan(targets), balancer_notes(state),
                                                        restart_notes(state))
        return with_notes(the_plan, [*notes, *restart, *suspend_notes(state)])
    finally:
        await _close(targets)


async def plan_and_apply(state: DesiredState, factory: TargetFactory, *, on_plan: Callable[[Plan], None],
                         on_result: Callable[[ChangeResult], None], progress: Progress) -> PassReport:
    if state.cluster is not None:   # one writer at a time: the daemons' leader lease
        from reconciler.cluster import Fenced, apply_lease

        async with apply_lease(state.cluster) as lease:
            return await _plan_and_apply(state, lambda s: [Fenced(t, lease) for t in factory(s)],
                                         on_plan=on_plan, on_result=on_result, progress=progress)
    return await _plan_and_apply(state, factory, on_plan=on_plan, on_result=on_result, progress=progress)


async def _plan_and_apply(state: DesiredState, factory: TargetFactory, *, on_plan: Callable[[Plan], None],
                          on_result: Callable[[ChangeResult], None], progress: Progress) -> PassReport:
    async def notes() -> list[TargetProblem]:
        return [*await balancer_notes(state), *suspend_notes(state)]

    return await run_pass(state, factory(state), notes=notes, on_plan=on_plan, progress=progress,
                          on_result=on_result)


def cmd_validate(args: argparse.Namespace) -> int:
    from reconciler.targets.ollama.sources import check_sources

    # the local sources are read here (and by plan), never by the daemon's reload of the file
    state = _load(args.file, skip_env=args.no_env, extra=check_sources)
    if state is None:
        return 1
    models = ", ".join(state.models) or "no models"
    print(f"{args.file}: valid ({len(state.nodes)} nodes; {models}"
          f"{'; Open WebUI at ' + state.openwebui.url if state.openwebui else ''})")
    return 0


def cmd_plan(args: argparse.Namespace, factory: TargetFactory = build_targets) -> int:
    state = _load(args.file)
    if state is None:
        return 1
    the_plan = asyncio.run(make_plan(state, factory))
    if args.json:
        print(render.to_json(the_plan))
    else:
        render.print_plan(the_plan, _console())
    return the_plan.exit_code(args.detailed_exitcode)


def cmd_apply(args: argparse.Namespace, factory: TargetFactory = build_targets) -> int:
    state = _load(args.file)
    if state is None:
        return 1
    console = _console()
    quiet = args.json
    done: list[ChangeResult] = []

    def on_plan(p: Plan) -> None:
        if not quiet and p.changes:
            render.print_plan(p, console)
        elif not quiet:    # nothing to change, but an absent balancer explains an empty chat page
            for note in p.notes:
                if note.target in (balancer_reach.TARGET, "reconcile"):
                    console.print(f"[cyan]note[/] {note.target}: {note.message}", highlight=False)

    def on_result(r: ChangeResult) -> None:
        done.append(r)
        if not quiet:
            console.print(render.result_line(r), highlight=False)

    bars = BarProgress(console) if console.is_terminal and not quiet else LogProgress()
    try:
        with bars:
            report = asyncio.run(plan_and_apply(state, factory, on_plan=on_plan, on_result=on_result, progress=bars))
    except OllafleetError as exc:   # [cluster]: another daemon leads, or Redis is down
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        applied = [r for r in done if r.status.value == "applied"]
        print(f"\nInterrupted: {len(applied)} change(s) were applied before the stop:", file=sys.stderr)
        for r in applied:
            print(f"  {r.change.target} {r.change.path_text}", file=sys.stderr)
        print("Run `ollafleet apply` again to finish.", file=sys.stderr)
        return 130
    if quiet:
        print(render.to_json(report))
    else:
        render.print_report(report, console)
    return report.exit_code()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollafleet", description="Keep an offline Ollama + Open WebUI network "
                                     "matching desired_state.toml, and balance its load.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check the file; change nothing, contact nothing")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE, help=FILE_HELP)
    p.add_argument("--no-env", action="store_true", help="do not require the ${VARIABLES} to be set")
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("plan", help="show what apply would change")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE, help=FILE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("apply", help="make the network match the file")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE, help=FILE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("daemon", help="run the balancer and keep the network converged (the service)")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE, help=FILE_HELP + "; watched for changes")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text: one timestamped line per event (default); json: one JSON object per line")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to let streams finish on stop")
    p.set_defaults(run=cmd_daemon)

    p = sub.add_parser("status", help="show a running daemon's status")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE, help="read status_listen from this file")
    p.add_argument("--url", help="the daemon's status address (default: from the file, else 127.0.0.1:11435)")
    p.add_argument("--json", action="store_true", help="print the daemon's /status JSON instead of tables")
    p.set_defaults(run=cmd_status)

    from reconciler import verify

    p = sub.add_parser("verify", help="check the network as people use it: an employee's model list in "
                       "Open WebUI, the balancer's, and with --chat one chat per model")
    verify.add_arguments(p)
    p.set_defaults(run=verify.cmd_verify)

    from reconciler import importer

    p = sub.add_parser("import", help="read a running network and write the file that describes it")
    importer.add_arguments(p)
    p.set_defaults(run=importer.cmd_import)

    from reconciler import bundle

    p = sub.add_parser("bundle", help="write ollafleet and its dependencies as wheels, for a PC with no package index")
    bundle.add_arguments(p)
    p.set_defaults(run=bundle.cmd_bundle)

    p = sub.add_parser("demo", help="simulated nodes on 127.0.0.1 plus the daemon on the demo network")
    p.add_argument("file", nargs="?", default=None,
                   help="the demo network (default: the one shipped with ollafleet, reconciler/demo.toml)")
    p.add_argument("--openwebui", action="store_true",
                   help="also start a real Open WebUI on 127.0.0.1 (cached install; admin printed once)")
    p.set_defaults(run=lambda a: __import__("reconciler.demo", fromlist=["main"]).main(a.file, a.openwebui))

    p = sub.add_parser("simulate", help="run simulated Ollama nodes on 127.0.0.1 (--help for its options)",
                       add_help=False)
    p.set_defaults(run=None)  # its arguments go to the simulator's own parser
    return parser


def _version() -> str:
    try:
        return version("ollafleet")
    except PackageNotFoundError:  # run from a checkout that was never installed
        from balancer import __version__

        return __version__


def cmd_daemon(args: argparse.Namespace) -> int:
    from reconciler.daemon import logs, run

    logs.setup(args.log_format, args.verbose)
    return run.main(args.file, args.drain_timeout)


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler import status_cli

    url = args.url
    if url is None:
        try:
            url = "http://" + load(args.file, skip_env=True).reconcile.status_listen
        except ConfigError:
            url = "http://127.0.0.1:11435"
    if not url.startswith("http"):
        url = "http://" + url
    return status_cli.main(url, args.json)


def _simulate(rest: list[str]) -> int:
    from simulator.cli import main as simulate_main

    return simulate_main(rest, prog="ollafleet simulate")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulate":
        return _simulate(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from reconciler.daemon import logs

    logs.setup("text", args.verbose)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
