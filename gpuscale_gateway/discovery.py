"""Where replicas come from, as plug-ins: the gateway runs each discovery as a task beside the server.

A discovery tells the registry what exists (`add`, `update`, `remove`, `replace`, `cordon`,
`uncordon`); it may do so once and return (a static list) or keep watching (Kubernetes Pods, in
`kube_discovery`, over plain HTTP: the gateway needs no Kubernetes client).
The admin API is a discovery too, driven from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gpuscale_gateway.registry import Registry
from gpuscale_gateway.settings import ReplicaSpec, parse_replicas


class Discovery(Protocol):
    async def run(self, registry: Registry) -> None:
        """Feed the registry; return when there is nothing more to tell. Cancelled at shutdown."""
        ...


class StaticDiscovery:
    """A fixed list: `NAME=URL` or bare `URL` items (the `--replicas` setting), or ReplicaSpecs."""

    def __init__(self, replicas: str | Sequence[ReplicaSpec]) -> None:
        self.replicas = parse_replicas(replicas) if isinstance(replicas, str) else list(replicas)

    async def run(self, registry: Registry) -> None:
        for spec in self.replicas:
            registry.add(spec.name, spec.url, spec.slots)
