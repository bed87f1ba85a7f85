"""Why a service is not ready: each cause a user can act on becomes the Ready reason and message."""

from __future__ import annotations

from typing import Any

import pytest
from gpuscale.kube.health import Readiness, readiness


def pod(name: str = "m-1", waiting: str | None = None, unschedulable: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": []}
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    if waiting:
        status["containerStatuses"] = [
            {"name": "model", "state": {"waiting": {"reason": waiting, "message": f"{waiting}!"}}}
        ]
    return {"metadata": {"name": name}, "status": status}


LATE = {
    "status": {
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-1" has timed out progressing.',
            }
        ]
    }
}


@pytest.mark.parametrize(
    ("pods", "deployment", "ready", "wanted", "expected"),
    [
        ([pod()], None, 1, 2, Readiness(True, "Ready", "1/2 replicas ready")),
        (
            [],
            None,
            0,
            0,
            Readiness(True, "ScaledToZero", "no replica wanted: the gateway holds requests until one starts"),
        ),
        (
            [pod(unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")],
            None,
            0,
            1,
            Readiness(False, "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        ),
        (
            [pod(waiting="ImagePullBackOff")],
            None,
            0,
            1,
            Readiness(False, "ImagePullBackOff", "pod m-1: ImagePullBackOff!"),
        ),
        (
            [pod(waiting="CrashLoopBackOff")],
            LATE,
            0,
            1,
            Readiness(False, "CrashLoopBackOff", "pod m-1: CrashLoopBackOff!"),
        ),
        (
            [pod(waiting="ContainerCreating")],
            LATE,
            0,
            1,
            Readiness(False, "ProgressDeadlineExceeded", 'ReplicaSet "m-1" has timed out progressing.'),
        ),
        ([pod(waiting="ContainerCreating")], None, 0, 3, Readiness(False, "Starting", "0/3 replicas ready")),
    ],
    ids=["ready", "scaled-to-zero", "no-gpu", "bad-image", "crashing", "deadline", "starting"],
)
def test_readiness(
    pods: list[dict[str, Any]],
    deployment: dict[str, Any] | None,
    ready: int,
    wanted: int,
    expected: Readiness,
) -> None:
    assert readiness(pods, deployment, ready, wanted) == expected
