"""The operator against the API test server, with real processes playing its pods: pod servers for the
model Deployment and gateways (discovering those pods through the same API) for the gateway Deployment."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpuscale.kube.handlers
import httpx
import kopf
import pytest
from gpuscale.crd import build_crd
from gpuscale.podproc import PodProcess, ServerProcess
from kopf.testing import KopfRunner

from kube_test_server.kubelet import http_ready
from kube_test_server.server import KubeTestServer
from kube_test_server.store import Obj

NS = "default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Played:
    """A pod played by a local process (a PodHandle for the test server's kubelet)."""

    process: ServerProcess
    ip: str
    port: int | None
    ready_url: str

    async def ready(self) -> bool:
        return await http_ready(self.ready_url)

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def exited(self) -> int | None:
        return self.process.proc.poll()


@dataclass
class ProcessRuntime:
    """Runs a model pod as `python -m inference_app` and a gateway pod as `python -m gpuscale_gateway` with
    the container's own env and args, each on its own 127.0.0.x, as a kubelet would run the images."""

    kubeconfig: Path
    started: dict[str, Played] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_ip: int = 20
    closed: bool = False

    def start(self, pod: Obj) -> Played:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
        with self.lock:
            if self.closed:
                raise RuntimeError("the test is over: no more pods")  # the kubelet must not restart them
            ip = f"127.0.0.{self.next_ip}"
            self.next_ip += 1
            if container.get("command") == ["gpuscale", "gateway"]:
                args = [a.replace("0.0.0.0", ip) for a in container["args"]]
                env = {**env, "KUBECONFIG": str(self.kubeconfig), "GPUSCALE_GATEWAY_LOG_LEVEL": "warning"}
                process = ServerProcess([sys.executable, "-m", "gpuscale_gateway", *args], env=env)
                admin = next(a.split("=", 1)[1] for a in args if a.startswith("--admin-port="))
                played = Played(process, ip, None, f"http://{ip}:{admin}/readyz")
            else:
                port = container["ports"][0]["containerPort"]
                process = PodProcess(["--port", str(port), "--log-level", "warning"], host=ip, env=env)
                played = Played(process, ip, port, f"http://{ip}:{port}/v2/health/ready")
            self.started[pod["metadata"]["name"]] = played
        return played

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            started = list(self.started.values())
        for played in started:
            played.process.kill()


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
