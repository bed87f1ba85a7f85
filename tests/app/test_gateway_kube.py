"""The gateway as a real process with `--discovery kubernetes`, in front of a Deployment whose pods are real
pod-server processes on their own loopback addresses (the API test server's kubelet runs them): it finds
both pods, spreads requests over them, and drops the pod a scale-down deletes without failing a request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kube_test_server.server import KubeTestServer
from kube_test_server.store import Obj
from tests.app.conftest import INFER, StartGateway, replicas, sleep_body
from tests.conftest import free_port, wait_until
from tests.kube.conftest import deployment
from tests.pod_runtime import ProcessRuntime

NS = "default"


@pytest.fixture
def runtime() -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(next_ip=2)
    yield runtime
    runtime.stop_all()


def server(port: int) -> Obj:
    """The pod server's container, serving the sleep model on `port`."""
    env = {"GPUSCALE_MODEL": "sleep", "GPUSCALE_SLEEP_SECONDS": "0.1", "GPUSCALE_LOG_LEVEL": "warning"}
    return {
        "name": "server",
        "image": "registry.local/gpuscale:dev",
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }


def pods(kube: KubeTestServer) -> dict[str, Obj]:
    items = httpx.get(f"{kube.url}/api/v1/namespaces/{NS}/pods", params={"labelSelector": "app=sleep"}).json()
    return {p["metadata"]["name"]: p for p in items["items"]}


async def keep_sending(url: str, stop: asyncio.Event, lanes: int = 3) -> list[httpx.Response]:
    """`lanes` clients each sending one request after the other until `stop`."""
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def lane() -> None:
            while not stop.is_set():
                answers.append(await client.post(INFER, json=sleep_body(0.1)))

        await asyncio.gather(*(lane() for _ in range(lanes)))
    return answers


def test_the_gateway_follows_a_deployment_through_scale_down(
    kube_cluster: Callable[..., KubeTestServer],
    runtime: ProcessRuntime,
    tmp_path: Path,
    start_gateway: StartGateway,
) -> None:
    kube = kube_cluster(runtime=runtime)
    config = kube.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    port = free_port()
    kube.apply(deployment(server(port), "sleep", replicas=2))
    gateway = start_gateway(
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
    )
    wait_until(lambda: len(replicas(gateway)) == 2, timeout=15)
    names = set(pods(kube))
    assert set(replicas(gateway)) == names
    for name, replica in replicas(gateway).items():
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
        await asyncio.to_thread(wait_until, lambda: len(replicas(gateway)) == 1, 5)
        await asyncio.sleep(0.6)  # the one left takes everything
        stop.set()
        return await sending

    answers = asyncio.run(scale_down_under_load())
    assert answers
    assert [a.text for a in answers if a.status_code != 200] == []
    served = {a.headers["gpuscale-replica"] for a in answers}
    assert served == names  # both answered before the scale-down

    (kept,) = replicas(gateway)
    (removed,) = names - {kept}
    # The deleted pod's process drained and exited, and the pod is gone from the API.
    wait_until(lambda: runtime.started[removed].exited() is not None and removed not in pods(kube), 10)
    assert runtime.started[removed].exited() == 0
    last = [a.headers["gpuscale-replica"] for a in answers[-3:]]
    assert last == [kept] * 3
    assert any(f"replica {removed} removed" in line for line in gateway.output)
