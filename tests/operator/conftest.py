"""The operator against the API test server, with real processes playing its pods: pod servers for the
model Deployment and gateways (discovering those pods through the same API) for the gateway Deployment."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpuscale.kube.handlers
import httpx
import kopf
import pytest
from gpuscale.crd import build_crd
from kopf.testing import KopfRunner

from kube_test_server.server import KubeTestServer
from kube_test_server.store import Obj
from tests.pod_runtime import ProcessRuntime

NS = "default"
INFER = "/v2/models/sleep/infer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Harness:
    kube: KubeTestServer
    runtime: ProcessRuntime
    http: httpx.Client

    def get(self, path: str) -> Obj:
        answer = self.http.get(path)
        answer.raise_for_status()
        body: Obj = answer.json()
        return body

    def exists(self, path: str) -> bool:
        return self.http.get(path).status_code == 200

    def service(self, name: str) -> Obj:
        return self.get(f"/apis/gpuscale.io/v1alpha1/namespaces/{NS}/gpuinferenceservices/{name}")

    def pods(self, selector: str) -> list[Obj]:
        items: list[Obj] = self.get(f"/api/v1/namespaces/{NS}/pods?labelSelector={selector}")["items"]
        return items

    def events(self, name: str) -> list[Obj]:
        items: list[Obj] = self.get(
            f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name={name}"
        )["items"]
        return items


@pytest.fixture
def harness(
    kube_cluster: Callable[..., KubeTestServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    runtime = ProcessRuntime(kubeconfig)
    kube = kube_cluster(runtime=runtime)
    kube.write_kubeconfig(kubeconfig)
    kube.apply(build_crd())
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # `kopf run FILE` puts the file's folder on sys.path; a copy keeps that from outliving the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        with httpx.Client(base_url=kube.url, timeout=10) as http:
            yield Harness(kube, runtime, http)
    finally:
        runtime.stop_all()


HANDLERS = gpuscale.kube.handlers.__file__


async def load(url: str, clients: int, seconds: float) -> list[int]:
    """`clients` closed-loop clients on the sleep model for `seconds`; the status codes they got."""
    codes: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def lane() -> None:
            while time.monotonic() < deadline:
                codes.append((await client.post(INFER, json={"inputs": []})).status_code)

        await asyncio.gather(*(lane() for _ in range(clients)))
    return codes


def condition(obj: Obj, kind: str) -> Obj:
    """The status condition of this type, or {}."""
    conditions: list[Obj] = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def run_operator(*extra: str) -> KopfRunner:
    """kopf runs the handlers file into a fresh registry: `kopf run` makes the registry it is given the
    process-wide default, so one left by an earlier test (or by another test's operator) never mixes in."""
    return KopfRunner(
        ["run", "--standalone", "-n", NS, *extra, HANDLERS], registry=kopf.OperatorRegistry(), timeout=60
    )


def sleep_service(name: str = "sleep", **autoscaling: Any) -> Obj:
    return {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "image": "gpuscale-inference:test",
            "port": free_port(),
            "gpusPerReplica": 0,
            "maxRequestSeconds": 10,
            "template": {
                "env": [
                    {"name": "GPUSCALE_MODEL", "value": "sleep"},
                    {"name": "GPUSCALE_SLEEP_SECONDS", "value": "0.5"},
                ]
            },
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "stableWindowSeconds": 4,
                "burstWindowSeconds": 2,
                "scaleDownDelaySeconds": 2,
                **autoscaling,
            },
            "gateway": {"maxQueue": 100, "queueTimeoutSeconds": 30},
        },
    }
