from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gpuscale.podproc import PodProcess

StartPod = Callable[..., PodProcess]


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/app/" in str(item.path):
            item.add_marker(pytest.mark.app)
