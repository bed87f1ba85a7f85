"""Why a service is not ready, in words a user can act on: from its pods and its model Deployment.

A spec can pass the schema and still never work: an image that cannot be pulled or crashes, a
Deployment past its progress deadline, pods that fit no node. Each becomes the Ready condition's
reason and message (and PodsSchedulable for the last), rather than a silent 0/N.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Container states that will not fix themselves without a change to the spec or the image.
STUCK = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str


def unschedulable(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The scheduler's message for a pod that fits no node (no free nvidia.com/gpu...), if any."""
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if (
                c.get("type") == "PodScheduled"
                and c.get("status") == "False"
                and c.get("reason") == "Unschedulable"
            ):
                return str(c.get("message") or "unschedulable")
    return None


def stuck_container(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK:
                name = (pod.get("metadata") or {}).get("name", "?")
                return str(waiting["reason"]), f"pod {name}: {waiting.get('message') or waiting['reason']}"
    return None


def deadline_exceeded(deployment: Mapping[str, Any] | None) -> str | None:
    for c in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("status") == "False":
            return str(c.get("message") or c.get("reason") or "the rollout made no progress")
    return None


def readiness(
    pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any] | None, ready: int, wanted: int
) -> Readiness:
    if ready > 0:
        return Readiness(True, "Ready", f"{ready}/{wanted} replicas ready")
    if wanted == 0:
        return Readiness(
            True, "ScaledToZero", "no replica wanted: the gateway holds requests until one starts"
        )
    if (blocked := unschedulable(pods)) is not None:
        return Readiness(False, "Unschedulable", blocked)
    if (stuck := stuck_container(pods)) is not None:
        return Readiness(False, *stuck)
    if (late := deadline_exceeded(deployment)) is not None:
        return Readiness(False, "ProgressDeadlineExceeded", late)
    return Readiness(False, "Starting", f"0/{wanted} replicas ready")
