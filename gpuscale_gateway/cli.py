"""`gpuscale gateway` / `python -m gpuscale_gateway`: flags generated from GatewaySettings.

Imported by `gpuscale --help`, so the server's modules are imported only by `run`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gpuscale_gateway.settings import GatewaySettings
from inference_app.cli import (
    OneLineErrorParser,
    add_settings_arguments,
    configure_logging,
    settings_from_args,
    usage_error,
)
from inference_app.exit_codes import EXIT_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, GatewaySettings)


def run(args: argparse.Namespace, prog: str) -> int:
    settings = settings_from_args(args, GatewaySettings, prog)
    if settings is None:
        return EXIT_USAGE
    configure_logging(settings.log_level)
    from gpuscale_gateway.server import bind, discoveries_from, serve
    from inference_app.server import CannotListen

    try:
        # Before binding: a missing namespace or kubeconfig is a usage error, not a gateway that serves
        # nothing.
        discoveries = discoveries_from(settings)
    except ValueError as exc:
        return usage_error(prog, exc)
    try:
        sockets = bind(settings)
    except CannotListen as exc:
        return usage_error(prog, exc)
    return serve(settings, sockets, discoveries)


def build_parser(prog: str = "python -m gpuscale_gateway") -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Queue every request in one FIFO queue and forward it to the replica with the fewest "
        "outstanding requests, never more than its slots. Replicas come from --replicas, the admin API, or "
        "the ready pods of a label selector (--discovery kubernetes).",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv), parser.prog)
