"""`gpuscale local SERVICE.yaml`: run a GpuInferenceService on this machine until Ctrl-C, then drain."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuscale.spec import GpuInferenceService

from inference_app.exit_codes import EXIT_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="SERVICE.yaml", help="a GpuInferenceService manifest")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the gateway listens on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="the gateway's port, where clients send (default 8080)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long a replica may take to become ready (default 600)",
    )
    parser.add_argument("--echo", action="store_true", help="show the gateway's and replicas' own logs")


def load_manifest(path: str, prog: str) -> GpuInferenceService | None:
    """The service in `path`, or None after one `PROG: error:` line per problem on stderr."""
    from gpuscale.spec import ManifestError, load_service

    try:
        return load_service(path)
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"{prog}: error: {exc.source}: {problem}", file=sys.stderr)
        return None


def run(args: argparse.Namespace, prog: str) -> int:
    import asyncio

    service = load_manifest(args.manifest, prog)
    if service is None:
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        print(f"{prog}: error: --port must be 0..65535, not {args.port}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_run(service, args, prog))


async def _run(service: GpuInferenceService, args: argparse.Namespace, prog: str) -> int:
    import asyncio
    import signal

    from gpuscale.control.live import LiveView
    from gpuscale.control.service import LocalService
    from gpuscale.podproc import PodStartError

    view = LiveView()
    local = LocalService(
        service,
        host=args.host,
        port=args.port,
        echo=args.echo,
        start_timeout=args.start_timeout,
        on_tick=view,
        note=view.note,
    )
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        else:
            view.note("second signal: stopping at once")
            raise SystemExit(1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await local.start()
    except (PodStartError, ValueError) as exc:
        await local.close()
        first = str(exc).splitlines()[0]
        print(f"{prog}: error: {first}", file=sys.stderr)
        return EXIT_USAGE
    try:
        view.note(
            f"{service.name}: gateway on {local.url} (admin {local.admin_url}); "
            "send requests there. Ctrl-C drains and stops."
        )
        await stop.wait()
        view.note("draining: the gateway answers every request it accepted, then everything stops")
        code = await local.drain()
        view.note(f"drained (gateway exit code {code})")
        return 0 if code == 0 else 1
    finally:
        await local.close()
