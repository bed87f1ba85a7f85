from __future__ import annotations

import time
from collections.abc import Callable, Iterator

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
