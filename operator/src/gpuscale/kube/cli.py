"""`gpuscale operator`: run the kopf operator for GpuInferenceServices."""

from __future__ import annotations

import argparse
import logging
import sys

from gpuscale.kube.objects import DEFAULT_GATEWAY_IMAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--metrics-port", type=int, default=8080, help="serve /metrics here (0: off)")
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="kopf's liveness endpoint URL ('' to turn off)",
    )
    parser.add_argument("--gateway-image", default=DEFAULT_GATEWAY_IMAGE, help="image of the gateway pods")
    parser.add_argument("--verbose", action="store_true", help="log kopf's debug messages")


def run(args: argparse.Namespace, prog: str) -> int:
    import kopf

    import gpuscale.kube.handlers  # noqa: F401  (registers the handlers)

    if not args.namespace and not args.all_namespaces:
        print(f"{prog}: say which namespaces to watch: -n NS (repeatable) or -A", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        standalone=True,  # one replica with the Recreate strategy: no peering to negotiate
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(gateway_image=args.gateway_image, metrics_port=args.metrics_port or None),
    )
    return 0
