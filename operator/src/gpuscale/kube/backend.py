"""The control loop's Kubernetes side: replicas are the model Deployment's pods, starting one is raising
its ``replicas``, and stopping exactly the idle ones is marking them cheapest to delete just before
lowering it (the ReplicaSet controller removes the lowest ``pod-deletion-cost`` first among equally
ready pods)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuscale.control.loop import ReplicaStatus
from gpuscale.kube.cache import NamespaceCache
from gpuscale.kube.client import KubeClient, KubeError, path
from gpuscale.kube.objects import DELETION_COST

# Below any cost a user sets by hand (the default is 0): the victims go first.
VICTIM_COST = "-1000"
# A watch brings a write back within milliseconds; after this long, a different count is someone else's.
WRITE_SEEN_WITHIN = 10.0


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serving_ip(pod: dict[str, Any]) -> str | None:
    """The pod's IP while it may be sent requests: it has one, it is ready, and it is not being deleted."""
    ip = (pod.get("status") or {}).get("podIP")
    if ip and pod_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
        return str(ip)
    return None


@dataclass
class KubeBackend:
    """One service's model pods, as the loop sees them; ``refresh`` reads the API before each tick."""

    client: KubeClient
    namespace: str
    deployment: str
    selector: str
    pods: list[dict[str, Any]] = field(default_factory=list)
    wanted: int = 0  # the Deployment's spec.replicas as last read or written
    live_deployment: dict[str, Any] = field(default_factory=dict)
    # The namespace's watched model objects; read instead of the API while synced.
    cache: NamespaceCache | None = None
    clock: Callable[[], float] = time.monotonic
    _written: tuple[int, float] | None = None  # our last replica count, and when

    async def refresh(self) -> None:
        if self.cache is not None and self.cache.synced:
            deployment = self.cache.deployment(self.deployment)
            if deployment is None:
                raise KubeError(404, "NotFound", f'deployments.apps "{self.deployment}" not yet seen')
            pods = self.cache.pods_matching(self.selector)
        else:
            deployment = await self.client.get(
                path("apps/v1", "deployments", self.namespace, self.deployment)
            )
            pods = await self.client.list(path("v1", "pods", self.namespace), self.selector)
        self.live_deployment = deployment
        self.wanted = self._replicas(int((deployment.get("spec") or {}).get("replicas") or 0))
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        self.pods = sorted(
            live, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
        )

    def _replicas(self, seen: int) -> int:
        """The Deployment's replicas: ``seen``, unless that is from before our own last write and the
        watch has not brought the write back yet (a scale-up seen undone would be made twice)."""
        if self._written is None:
            return seen
        written, at = self._written
        if seen != written and self.clock() - at < WRITE_SEEN_WITHIN:
            return written
        self._written = None  # seen, or someone else changed it since: theirs stands
        return seen

    def replicas(self) -> Sequence[ReplicaStatus]:
        """As many replicas as the Deployment wants: ready pods first, then starting ones, then ones it
        has no pod for yet. A rollout's surge pod is the Deployment's business, not a replica too many
        (counting it, the loop would scale down in the middle of every rollout)."""
        ready = [ReplicaStatus(p["metadata"]["name"], "ready") for p in self.pods if pod_ready(p)]
        starting = [ReplicaStatus(p["metadata"]["name"], "starting") for p in self.pods if not pod_ready(p)]
        out = (ready + starting)[: self.wanted]
        out += [ReplicaStatus(f"(pending {i + 1})", "starting") for i in range(self.wanted - len(out))]
        return out

    async def scale(self, replicas: int) -> None:
        url = path("apps/v1", "deployments", self.namespace, self.deployment, "scale")
        await self.client.patch(url, {"spec": {"replicas": replicas}})
        self.wanted = replicas
        self._written = (replicas, self.clock())

    async def start(self, count: int) -> Sequence[str]:
        await self.scale(self.wanted + count)
        return [f"(new {i + 1})" for i in range(count)]

    async def stop(self, names: Sequence[str]) -> None:
        for name in names:
            if name.startswith("("):
                continue  # no pod yet: lowering replicas is all it takes
            url = path("v1", "pods", self.namespace, name)
            await self.client.patch(url, {"metadata": {"annotations": {DELETION_COST: VICTIM_COST}}})
        await self.scale(max(0, self.wanted - len(names)))
