"""`gpuscale demo`: run the example service locally, send it a burst, and watch it scale up; then one
client keeps going while the idle replicas are removed under it. Ends with a plot of the run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuscale.loadstats import LoadResult
    from gpuscale.spec import GpuInferenceService

DEFAULT_MANIFEST = "examples/sleep.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest", default=DEFAULT_MANIFEST, help=f"the service to run (default {DEFAULT_MANIFEST})"
    )
    parser.add_argument("--clients", type=int, default=8, help="clients in the burst (default 8)")
    parser.add_argument(
        "--burst-seconds", type=float, default=12.0, help="how long the burst lasts (default 12)"
    )
    parser.add_argument(
        "--tail-seconds", type=float, default=30.0, help="one client after the burst, this long (default 30)"
    )
    parser.add_argument("--plot", default="gpuscale-demo.png", help="where to write the plot")


def run(args: argparse.Namespace, prog: str = "gpuscale demo") -> int:
    from gpuscale.control.local_cli import load_manifest
    from inference_app.exit_codes import EXIT_USAGE

    if not Path(args.manifest).exists() and args.manifest == DEFAULT_MANIFEST:
        print(
            f"{prog}: error: {DEFAULT_MANIFEST} not found: run from the repository root, or pass --manifest",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.clients < 1 or args.burst_seconds <= 0 or args.tail_seconds <= 0:
        print(
            f"{prog}: error: --clients, --burst-seconds and --tail-seconds must be positive", file=sys.stderr
        )
        return EXIT_USAGE
    service = load_manifest(args.manifest, prog)
    if service is None:
        return EXIT_USAGE
    result = asyncio.run(_demo(service, args))
    print()
    print(result.report())
    try:
        from gpuscale.plot import plot_run

        plot_run(result, args.plot, title=f"gpuscale demo: {service.name}")
        print(f"\nPlot of replicas, queue and latency over time: {Path(args.plot).resolve()}")
    except ImportError:
        print("\n(no plot: matplotlib is missing; pip install 'gpuscale[plot]')")
    return 0 if int(result.summary()["failed"]) == 0 else 1


async def _demo(service: GpuInferenceService, args: argparse.Namespace) -> LoadResult:
    from gpuscale.control.live import LiveView
    from gpuscale.control.service import LocalService
    from gpuscale.loadgen import generate
    from gpuscale.loadstats import LoadSpec

    spec = service.spec
    view = LiveView()
    view.note(
        f"Running {args.manifest} locally: the gateway, {spec.autoscaling.min_replicas} replica(s) to start, "
        f"up to {spec.autoscaling.max_replicas}, one request per replica at a time."
    )
    async with LocalService(service, port=0, on_tick=view, note=view.note) as local:
        loop = local.loop
        assert loop is not None
        while loop.last is None or loop.last.observation.ready < spec.autoscaling.min_replicas:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        url = f"{local.url}/v2/models/sleep/infer"
        body = b"{}"  # the model's default job length
        view.note(
            f"Gateway at {local.url}. Sending {args.clients} clients for {args.burst_seconds:g} s, "
            f"then 1 client for {args.tail_seconds:g} s more:"
        )
        burst, tail = await asyncio.gather(
            generate(LoadSpec(url, "POST", body, concurrency=args.clients - 1, duration=args.burst_seconds)),
            generate(
                LoadSpec(url, "POST", body, concurrency=1, duration=args.burst_seconds + args.tail_seconds),
                metrics_url=f"{local.admin_url}/metrics",
            ),
        )
        view.note("Load done; draining (every accepted request is answered) and stopping.")
        await local.drain()
    return tail.with_requests_of(burst)
