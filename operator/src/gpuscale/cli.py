"""The `gpuscale` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import NamedTuple

from gpuscale import __version__


class Command(NamedTuple):
    help: str
    module: str  # has add_arguments(parser) and run(args) -> int
    description: str = ""


COMMANDS = {
    "local": Command(
        "run a GpuInferenceService manifest on this machine: gateway, replicas and the autoscaler",
        "gpuscale.control.local_cli",
        "Read a GpuInferenceService manifest (the YAML you would `kubectl apply`), start the gateway and "
        "one pod-server process per replica on 127.0.0.x, and scale them by queue depth. Ctrl-C drains "
        "everything: every accepted request is answered.",
    ),
    "gateway": Command(
        "run the gateway: one FIFO queue in front of one-slot replicas",
        "gpuscale_gateway.cli",
        "Queue every request in one FIFO queue and forward it to the replica with the fewest outstanding "
        "requests, never more than its slots. Replicas come from --replicas or the admin API.",
    ),
    "serve": Command(
        "run the pod server: one model, one worker, a bounded queue",
        "inference_app.cli",
        "Serve one model over the Open Inference Protocol (KServe v2 REST) with `--slots` requests on the "
        "model at once and up to `--max-queue` waiting. SIGTERM drains: every admitted request is answered "
        "before the process exits.",
    ),
    "load": Command(
        "send load to a URL and print latency percentiles (and plot them with --plot)",
        "gpuscale.loadgen",
    ),
    "demo": Command(
        "run an example service locally, send it a burst, and watch it scale up and back down",
        "gpuscale.demo",
    ),
    "operator": Command(
        "run the Kubernetes operator: GpuInferenceServices become Deployments scaled by queue depth",
        "gpuscale.kube.cli",
        "Watch GpuInferenceServices, create the model Deployment, its Services, the gateway and its RBAC, "
        "and scale the model Deployment by the gateway's queue every tick (kopf; `kopf run -m "
        "gpuscale.kube.handlers` works too).",
    ),
    "bench": Command(
        "simulate autoscalers (ours, HPA, KEDA, Knative) on a trace: latency and GPU cost side by side",
        "gpuscale.sim.cli",
        "A seeded discrete-event simulation of the gateway, one-slot replicas with a model load time, and "
        "one autoscaler: ours (the real policy) and re-implementations of the Kubernetes HPA, KEDA and "
        "Knative's KPA with their defaults. `--all --write-doc` regenerates docs/policy-comparison.md.",
    ),
    "crd": Command(
        "print the GpuInferenceService CRD (for `kubectl apply -f -`)",
        "gpuscale.crd",
        "Print the CustomResourceDefinition generated from the same models that read manifests locally; "
        "crds/gpuinferenceservices.gpuscale.io.yaml is this output.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from inference_app.cli import OneLineErrorParser

    parser = OneLineErrorParser(
        prog="gpuscale",
        description="GPU inference services that scale by queue depth: one request per GPU, "
        "one worker per pod, as many pods as the queue needs.",
    )
    parser.add_argument("--version", action="version", version=f"gpuscale {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.description or command.help)
        importlib.import_module(command.module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = importlib.import_module(COMMANDS[args.command].module).run(args, f"gpuscale {args.command}")
    return result
