from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gpuscale.podproc import GatewayProcess, PodProcess

INFER = "/v2/models/sleep/infer"
GPUSCALE = os.path.join(os.path.dirname(sys.executable), "gpuscale")  # the console script

StartPod = Callable[..., PodProcess]
StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_pod() -> Iterator[StartPod]:
    """Start real `python -m inference_app` processes on loopback; each is killed at teardown."""
    pods: list[PodProcess] = []

    def start(*args: str, wait_ready: bool = True, **kwargs: object) -> PodProcess:
        pod = PodProcess(["--log-level", "info", *args], **kwargs)  # type: ignore[arg-type]
        pods.append(pod)
        if wait_ready:
            pod.wait_ready()
        else:
            pod.wait_listening()
        return pod

    yield start
    for pod in pods:
        pod.kill()


@pytest.fixture
def start_gateway() -> Iterator[StartGateway]:
    """Start `python -m gpuscale_gateway` processes; each is killed at teardown."""
    gateways: list[GatewayProcess] = []

    def start(*args: str) -> GatewayProcess:
        gateway = GatewayProcess(["--log-level", "info", *args])
        gateways.append(gateway)
        gateway.wait_ready()
        return gateway

    yield start
    for gateway in gateways:
        gateway.kill()


def sleep_body(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"parameters": {"seconds": seconds}, **extra}


async def staggered(url: str, bodies: list[dict[str, Any]], gap: float = 0.03) -> list[httpx.Response]:
    """Send the bodies `gap` apart (so their arrival order is known) and gather the answers."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def send(i: int, body: dict[str, Any]) -> httpx.Response:
            await asyncio.sleep(i * gap)
            return await client.post(INFER, json=body)

        return await asyncio.gather(*(send(i, b) for i, b in enumerate(bodies)))


def replicas(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    """The gateway's replicas by name, as its admin API lists them."""
    assert gateway.admin_url is not None
    listing = httpx.get(gateway.admin_url + "/replicas", timeout=5).json()
    return {r["name"]: r for r in listing["replicas"]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/app/" in str(item.path):
            item.add_marker(pytest.mark.app)
