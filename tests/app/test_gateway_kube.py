"""The gateway as a real process with `--discovery kubernetes`, in front of a Deployment whose pods are real
pod-server processes on their own loopback addresses (the API test server's kubelet runs them): it finds
both pods, spreads requests over them, and drops the pod a scale-down deletes without failing a request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpuscale.podproc import GatewayProcess

from kube_test_server.server import KubeTestServer
from kube_test_server.store import Obj
from tests.conftest import wait_until
from tests.pod_runtime import ProcessRuntime

INFER = "/v2/models/sleep/infer"
NS = "default"


@pytest.fixture
def runtime() -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(next_ip=2)
    yield runtime
    runtime.stop_all()


def free_port() -> int:
    """A port free on every address, so each pod can listen on it at its own 127.0.0.x."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def deployment(replicas: int, port: int) -> Obj:
    env = {"GPUSCALE_MODEL": "sleep", "GPUSCALE_SLEEP_SECONDS": "0.1", "GPUSCALE_LOG_LEVEL": "warning"}
    container = {
        "name": "server",
        "image": "registry.local/gpuscale:dev",
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sleep", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "sleep"}},
            "template": {"metadata": {"labels": {"app": "sleep"}}, "spec": {"containers": [container]}},
        },
    }


def listed(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    assert gateway.admin_url is not None
    listing = httpx.get(gateway.admin_url + "/replicas", timeout=5).json()
    return {r["name"]: r for r in listing["replicas"]}


def pods(kube: KubeTestServer) -> dict[str, Obj]:
    items = httpx.get(f"{kube.url}/api/v1/namespaces/{NS}/pods", params={"labelSelector": "app=sleep"}).json()
    return {p["metadata"]["name"]: p for p in items["items"]}


async def keep_sending(url: str, stop: asyncio.Event, lanes: int = 3) -> list[httpx.Response]:
    """`lanes` clients each sending one request after the other until `stop`."""
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def lane() -> None:
            while not stop.is_set():
                answers.append(await client.post(INFER, json={"parameters": {"seconds": 0.1}}))

        await asyncio.gather(*(lane() for _ in range(lanes)))
    return answers


def test_the_gateway_follows_a_deployment_through_scale_down(
    kube_cluster: Callable[..., KubeTestServer], runtime: ProcessRuntime, tmp_path: Path
) -> None:
    kube = kube_cluster(runtime=runtime)
    config = kube.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    port = free_port()
    kube.apply(deployment(2, port))
    gateway = GatewayProcess(
        [
            "--log-level",
            "info",
            "--discovery",
            "kubernetes",
            "--kube-namespace",
            NS,
            "--kube-selector",
            "app=sleep",
            "--kube-port",
            str(port),
            "--kubeconfig",
            str(config),
        ]
    )
    try:
        gateway.wait_ready()
        wait_until(lambda: len(listed(gateway)) == 2, timeout=15)
        names = set(pods(kube))
        assert set(listed(gateway)) == names
        for name, replica in listed(gateway).items():
            assert replica["url"] == f"http://{runtime.started[name].ip}:{port}"

        async def scale_down_under_load() -> list[httpx.Response]:
            stop = asyncio.Event()
            sending = asyncio.create_task(keep_sending(gateway.url, stop))
            await asyncio.sleep(0.6)  # both pods busy
            async with httpx.AsyncClient(base_url=kube.url) as api:
                response = await api.patch(
                    f"/apis/apps/v1/namespaces/{NS}/deployments/sleep",
                    json={"spec": {"replicas": 1}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                response.raise_for_status()
            await asyncio.to_thread(wait_until, lambda: len(listed(gateway)) == 1, 5)
            await asyncio.sleep(0.6)  # the one left takes everything
            stop.set()
            return await sending

        answers = asyncio.run(scale_down_under_load())
        assert answers
        assert [a.text for a in answers if a.status_code != 200] == []
        served = {a.headers["gpuscale-replica"] for a in answers}
        assert served == names  # both answered before the scale-down

        (kept,) = listed(gateway)
        (removed,) = names - {kept}
        # The deleted pod's process drained and exited, and the pod is gone from the API.
        wait_until(lambda: runtime.started[removed].exited() is not None and removed not in pods(kube), 10)
        assert runtime.started[removed].exited() == 0
        last = [a.headers["gpuscale-replica"] for a in answers[-3:]]
        assert last == [kept] * 3
        assert any(f"replica {removed} removed" in line for line in gateway.output)
    finally:
        gateway.kill()
