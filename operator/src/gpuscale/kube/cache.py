"""The operator's view of its model pods and model Deployments, one per namespace, kept by watching.

Every service's control loop reads its pods and its Deployment each tick. Reading them from the API
would be two requests per service per tick (at 200 services and 1 s ticks, 400 a second, each LIST a
consistent read that reaches etcd on a real cluster). Instead each namespace with services in it gets
one list-and-watch of the model pods and one of the model Deployments (`gpuscale_gateway.listwatch`:
the label selector is applied by the server, so no other pod is ever seen), shared by the loops there
and stopped with the last of them.

A loop reads the cache only while it is synced: listed, and not failed since. Otherwise it reads the
API itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuscale.kube.client import Credentials, KubeClient, path
from gpuscale.kube.objects import APP_NAME, COMPONENT_LABEL, INSTANCE_LABEL, NAME_LABEL
from gpuscale_gateway.listwatch import ListWatch

Obj = dict[str, Any]

# Every model pod and model Deployment of every service (each service's own add its instance label).
MODEL_SELECTOR = f"{NAME_LABEL}={APP_NAME},{COMPONENT_LABEL}=model"


def _terms(selector: str) -> dict[str, str]:
    return dict(term.split("=", 1) for term in selector.split(",") if term)


def _holds(obj: Mapping[str, Any], terms: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in terms.items())


def matches(obj: Mapping[str, Any], selector: str) -> bool:
    """Whether the object's labels hold every ``key=value`` of an equality-based ``selector``."""
    return _holds(obj, _terms(selector))


def _instance(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL, ""))


@dataclass
class Kind:
    """One kind's objects by name, as the watch last said; synced while the last list stands. Also by
    service (the instance label): each service's loop asks for its own every tick, and scanning every
    model pod in the namespace for each of them would cost services x pods per tick."""

    name: str
    objects: dict[str, Obj] = field(default_factory=dict)
    by_instance: dict[str, dict[str, Obj]] = field(default_factory=dict)
    synced: bool = False

    def listed(self, items: list[Obj]) -> None:
        self.objects, self.by_instance = {}, {}
        for obj in items:
            self._keep(obj)
        self.synced = True

    def changed(self, kind: str, obj: Obj) -> None:
        self._forget(obj["metadata"]["name"])
        if kind != "DELETED":
            self._keep(obj)

    def failed(self) -> None:
        self.synced = False  # missed events: the loops read the API until the next list

    def _keep(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.objects[name] = obj
        self.by_instance.setdefault(_instance(obj), {})[name] = obj

    def _forget(self, name: str) -> None:
        old = self.objects.pop(name, None)
        if old is not None:
            peers = self.by_instance[_instance(old)]
            del peers[name]
            if not peers:
                del self.by_instance[_instance(old)]


class NamespaceCache:
    """The model pods and Deployments of one namespace."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.pods = Kind(f"model pods in {namespace}")
        self.deployments = Kind(f"model Deployments in {namespace}")
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for kind, url in (
            (self.pods, path("v1", "pods", self.namespace)),
            (self.deployments, path("apps/v1", "deployments", self.namespace)),
        ):
            watch = ListWatch(
                self.client.http,
                url,
                MODEL_SELECTOR,
                name=kind.name,
                meanwhile="the loops read the API meanwhile",
                on_list=kind.listed,
                on_event=kind.changed,
                on_failure=kind.failed,
            )
            self._tasks.append(asyncio.create_task(watch.run(), name=f"watch {url}"))

    @property
    def synced(self) -> bool:
        return self.pods.synced and self.deployments.synced

    def deployment(self, name: str) -> Obj | None:
        return self.deployments.objects.get(name)

    def pods_matching(self, selector: str) -> list[Obj]:
        terms = _terms(selector)
        instance = terms.get(INSTANCE_LABEL)
        pods = self.pods.objects if instance is None else self.pods.by_instance.get(instance, {})
        return [p for p in pods.values() if _holds(p, terms)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()


@dataclass
class Caches:
    """The namespaces' caches, each started by the first loop there and closed with the last."""

    credentials: Callable[[], Credentials]
    _open: dict[str, tuple[NamespaceCache, int]] = field(default_factory=dict)

    def acquire(self, namespace: str) -> NamespaceCache:
        cache, users = self._open.get(namespace, (None, 0))
        if cache is None:
            cache = NamespaceCache(KubeClient(self.credentials()), namespace)
            cache.start()
        self._open[namespace] = (cache, users + 1)
        return cache

    async def release(self, namespace: str) -> None:
        cache, users = self._open[namespace]
        if users > 1:
            self._open[namespace] = (cache, users - 1)
            return
        del self._open[namespace]
        await cache.close()
