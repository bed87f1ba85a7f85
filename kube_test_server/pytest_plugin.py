"""pytest fixtures for the API test server; enable with ``pytest_plugins = [this module's name]``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kube_test_server.server import KubeTestServer, cluster


@pytest.fixture
def kube_server() -> Iterator[KubeTestServer]:
    """The API alone, no controllers, bookmarks every 0.2 s so watch tests stay short."""
    with KubeTestServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def kube_cluster() -> Iterator[Callable[..., KubeTestServer]]:
    """A factory: ``kube_cluster(gpus=1, runtime=...)`` starts a server with every controller and a node."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> KubeTestServer:
            return stack.enter_context(cluster(**options))

        yield start
