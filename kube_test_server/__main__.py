"""``python -m kube_test_server``: serve until Ctrl-C, with a kubeconfig for kubectl and ``kopf run``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from kube_test_server.errors import ApiError
from kube_test_server.server import KubeTestServer, cluster


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kube_test_server",
        description="A Kubernetes API test server over HTTP (no cluster needed); writes a kubeconfig for it.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--kubeconfig", type=Path, default=Path("kubeconfig.yaml"), help="where to write it")
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument(
        "--apply",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="create the objects in this YAML file at start (CRDs first); repeatable",
    )
    parser.add_argument(
        "--no-controllers",
        action="store_true",
        help="serve the API only: no Deployment, EndpointSlice, scheduler or kubelet",
    )
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu allocatable on the one node")
    args = parser.parse_args(argv)

    if args.no_controllers:
        server = KubeTestServer(args.host, args.port)
    else:
        server = cluster(gpus=args.gpus, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        print(f"kube_test_server: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    for path in args.apply:
        try:
            server.apply_file(path)
        except (OSError, LookupError, ValueError, ApiError) as exc:
            print(f"kube_test_server: {path}: {exc}", file=sys.stderr)
            server.stop()
            return 2
    server.write_kubeconfig(args.kubeconfig, args.namespace)
    print(f"serving the Kubernetes API on {server.url}", flush=True)
    print(f"kubeconfig: {args.kubeconfig}  (export KUBECONFIG={args.kubeconfig.resolve()})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
