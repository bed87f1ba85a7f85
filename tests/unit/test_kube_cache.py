"""The operator's watched cache of model pods and Deployments, against the API test server: it lists,
follows changes, sees only model objects, relists after a dropped watch, and says when it cannot be
trusted; and the backend's guard that a cache not yet showing our own scale write does not undo it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gpuscale.kube.backend import WRITE_SEEN_WITHIN, KubeBackend
from gpuscale.kube.cache import Caches, NamespaceCache, matches
from gpuscale.kube.client import Credentials, KubeClient

from kube_test_server.server import KubeTestServer
from tests.conftest import wait_for

NS = "default"
MODEL = {"app.kubernetes.io/name": "gpuscale", "app.kubernetes.io/component": "model"}


def pod(name: str, instance: str, **labels: str) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": NS,
        "labels": {**MODEL, "app.kubernetes.io/instance": instance, **labels},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "m", "image": "i"}]},
    }


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {**MODEL, "app.kubernetes.io/instance": name.removesuffix("-model")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "m", "image": "i"}]},
            },
        },
    }


def test_equality_selectors_match_labels() -> None:
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}}}
    assert matches(obj, "a=1")
    assert matches(obj, "a=1,b=2")
    assert not matches(obj, "a=1,b=3")
    assert not matches({"metadata": {}}, "a=1")
    assert matches(obj, "")


async def test_it_lists_follows_and_sees_only_model_objects(kube_server: KubeTestServer) -> None:
    kube_server.apply(pod("a-1", "a"), deployment("a-model", 1))
    kube_server.apply({**pod("gw", "a"), "metadata": {**pod("gw", "a")["metadata"], "labels": {"app": "x"}}})
    cache = NamespaceCache(KubeClient(Credentials(kube_server.url)), NS)
    cache.start()
    try:
        await wait_for(lambda: cache.synced)
        assert set(cache.pods.objects) == {"a-1"}  # the server applied the selector: no "gw"
        deployment_a = cache.deployment("a-model")
        assert deployment_a is not None
        assert deployment_a["spec"]["replicas"] == 1

        kube_server.apply(pod("a-2", "a"), pod("b-1", "b"))
        await wait_for(lambda: {"a-1", "a-2", "b-1"} <= cache.pods.objects.keys())
        selector = "app.kubernetes.io/instance=a,app.kubernetes.io/component=model"
        assert {p["metadata"]["name"] for p in cache.pods_matching(selector)} == {"a-1", "a-2"}

        async with httpx.AsyncClient(base_url=kube_server.url) as http:
            scaled = await http.patch(
                f"/apis/apps/v1/namespaces/{NS}/deployments/a-model",
                json={"spec": {"replicas": 3}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert scaled.status_code == 200
            assert (await http.delete(f"/api/v1/namespaces/{NS}/pods/a-1")).status_code == 200
        await wait_for(lambda: (cache.deployment("a-model") or {}).get("spec", {}).get("replicas") == 3)
        await wait_for(lambda: "a-1" not in cache.pods.objects)

        # A dropped watch relists; what changed meanwhile is seen.
        assert kube_server.drop_watches() >= 2
        kube_server.apply(pod("a-3", "a"))
        await wait_for(lambda: "a-3" in cache.pods.objects)
    finally:
        await cache.close()


async def test_a_list_refused_makes_it_unsynced_until_it_lists_again(kube_server: KubeTestServer) -> None:
    kube_server.apply(pod("a-1", "a"))
    cache = NamespaceCache(KubeClient(Credentials(kube_server.url)), NS)
    cache.start()
    try:
        await wait_for(lambda: cache.synced)
        fault = kube_server.inject_fault(403, method="GET", path="/pods$", times=-1, reason="Forbidden")
        kube_server.drop_watches()
        await wait_for(lambda: not cache.synced)
        fault.times = 1  # one more refusal, then it is gone
        await wait_for(lambda: cache.synced, within=10)
    finally:
        await cache.close()


async def test_caches_are_shared_per_namespace_and_closed_with_the_last_user(
    kube_server: KubeTestServer,
) -> None:
    caches = Caches(lambda: Credentials(kube_server.url))
    first = caches.acquire(NS)
    second = caches.acquire(NS)
    other = caches.acquire("other")
    assert first is second
    assert other is not first
    await caches.release(NS)
    assert caches.acquire(NS) is first  # still open: one user left, and now this one
    await caches.release(NS)
    await caches.release(NS)
    await caches.release("other")
    assert caches.acquire(NS) is not first  # closed with its last user; a new one now
    await caches.release(NS)


class FakeCache:
    """Synced, with a Deployment whose replicas the test sets."""

    synced = True

    def __init__(self) -> None:
        self.replicas = 1

    def deployment(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"replicas": self.replicas}}

    def pods_matching(self, selector: str) -> list[dict[str, Any]]:
        return []


class NoWrites:
    async def patch(self, url: str, body: Any) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("cached", "after", "expected"),
    [
        (1, 0.5, 4),  # the watch has not brought our write back: ours stands
        (4, 0.5, 4),  # it has
        (2, WRITE_SEEN_WITHIN + 1, 2),  # long after, a different count is someone else's: theirs stands
    ],
)
async def test_our_own_scale_write_is_not_undone_by_a_cache_that_has_not_seen_it(
    cached: int, after: float, expected: int
) -> None:
    now = [100.0]
    cache = FakeCache()
    backend = KubeBackend(NoWrites(), NS, "a-model", "x=y", cache=cache, clock=lambda: now[0])  # type: ignore[arg-type]
    await backend.refresh()
    assert backend.wanted == 1
    await backend.scale(4)
    cache.replicas = cached
    now[0] += after
    await backend.refresh()
    assert backend.wanted == expected
