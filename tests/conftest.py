from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inference_app.app import create_app
from inference_app.settings import ServerSettings

# kube_server and kube_cluster: the Kubernetes API test server, for the API's own tests and the operator's.
pytest_plugins = ["kube_test_server.pytest_plugin"]


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(interval)


async def wait_for(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll in-process state (a queue, a registry, a fake's flag) from the event loop until `check` holds."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def free_port(host: str = "0.0.0.0") -> int:
    """A port free on `host` now (on the default, free on every address: each 127.0.0.x can listen on it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The object's status condition of this type, or {}."""
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


@pytest.fixture
def app_client() -> Iterator[Callable[..., TestClient]]:
    """An in-process app (lifespan running) built from settings; waits until the model is ready."""
    clients: list[TestClient] = []

    def make(wait_ready: bool = True, app: FastAPI | None = None, **settings: object) -> TestClient:
        client = TestClient(app or create_app(ServerSettings(**settings)))  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        if wait_ready:
            wait_until(lambda: client.get("/v2/health/ready").status_code == 200)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
