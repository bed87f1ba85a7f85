"""The operator against the API test server, with real processes playing its pods: pod servers for the
model Deployment and gateways (discovering those pods through the same API) for the gateway Deployment."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpuscale.kube.handlers
import httpx
import pytest
from gpuscale.crd import build_crd
from kopf.testing import KopfRunner

from kube_test_server.server import KubeTestServer
from kube_test_server.store import Obj
from tests.conftest import condition, free_port, wait_until
from tests.kopf_runs import kopf_env, kopf_runner
from tests.pod_runtime import ProcessRuntime

NS = "default"
INFER = "/v2/models/sleep/infer"
CRS = f"/apis/gpuscale.io/v1alpha1/namespaces/{NS}/gpuinferenceservices"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


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

    def merge_patch(self, path: str, body: Obj) -> httpx.Response:
        return self.http.patch(
            path, content=json.dumps(body), headers={"Content-Type": "application/merge-patch+json"}
        )

    def service(self, name: str) -> Obj:
        return self.get(f"{CRS}/{name}")

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
    kopf_env(monkeypatch, kubeconfig)
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


def selector(name: str, component: str) -> str:
    """The label selector of one component's pods (model or gateway) of the service `name`."""
    return f"app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"


def gateway_url(harness: Harness, name: str) -> str:
    """The URL of the service's one gateway pod."""
    (pod,) = harness.pods(selector(name, "gateway"))
    return f"http://{pod['status']['podIP']}:8080"


def wait_ready(harness: Harness, name: str, scaling: bool = True, timeout: float = 30) -> None:
    """Until the service is Ready and (unless not `scaling`) ScalingActive."""
    wait_until(lambda: condition(harness.service(name), "Ready").get("status") == "True", timeout)
    if scaling:
        wait_until(lambda: condition(harness.service(name), "ScalingActive").get("status") == "True", timeout)


def stopped_cleanly(runner: KopfRunner) -> None:
    exception: BaseException | None = runner.exception
    assert exception is None, exception


def run_operator(*scope: str) -> KopfRunner:
    """The operator's handlers under kopf, watching `scope` (-A, or -n NS: by default -n default)."""
    return kopf_runner(HANDLERS, *(scope or ("-n", NS)), timeout=60)


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
