"""The `gpuscale` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gpuscale import __version__


def build_parser() -> argparse.ArgumentParser:
    # Subcommands import their modules when they run, so `gpuscale --help` stays quick.
    from gpuscale.demo import add_demo_arguments
    from inference_app.cli import OneLineErrorParser, add_serve_arguments

    parser = OneLineErrorParser(
        prog="gpuscale",
        description="GPU inference services that scale by queue depth: one request per GPU, "
        "one worker per pod, as many pods as the queue needs.",
    )
    parser.add_argument("--version", action="version", version=f"gpuscale {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the pod server: one model, one worker, a bounded queue",
        description="Serve one model over the Open Inference Protocol (KServe v2 REST) with `--slots` "
        "requests on the model at once and up to `--max-queue` waiting. SIGTERM drains: every admitted "
        "request is answered before the process exits.",
    )
    add_serve_arguments(serve)
    demo = commands.add_parser(
        "demo", help="start a pod server and show a burst queueing on its one slot, then a drain"
    )
    add_demo_arguments(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from inference_app.cli import run_serve

        return run_serve(args, "gpuscale serve")
    from gpuscale.demo import run_demo

    return run_demo(args)
