"""The built-in controllers, driven over real HTTP with the official ``kubernetes`` client.

Deployments roll out, scale down in the ReplicaSet controller's order and cascade on deletion;
EndpointSlices list ready, not-ready and terminating pods; the scheduler keeps a GPU pod Pending until a
node has a GPU; the kubelet follows real local processes (IP, readiness, restart, SIGTERM on deletion).
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client import ApiException

from kube_test_server.controllers import (
    DELETION_COST,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    POD_TEMPLATE_HASH,
    REVISION,
    SERVICE_NAME_LABEL,
    DeploymentController,
    EndpointSliceController,
    pod_ready,
    pods_to_delete,
    template_hash,
)
from kube_test_server.kubelet import (
    Kubelet,
    Scheduler,
    http_ready,
    node,
    parse_quantity,
    readiness_url,
    register_node,
)
from kube_test_server.server import Controller, KubeTestServer
from kube_test_server.store import Obj, Store
from tests.conftest import condition, free_port, wait_until
from tests.kube.conftest import deployment

NS = "default"


# --- fixtures ------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    # Any: the client's signatures ask for its models, and these tests send plain manifests (it takes both).
    server: KubeTestServer
    core: Any
    apps: Any
    discovery: Any
    api: Any

    def to_dict(self, model: Any) -> Obj:
        out = self.api.sanitize_for_serialization(model)
        assert isinstance(out, dict)
        return out

    def pods(self, selector: str = "") -> list[Obj]:
        listed = self.core.list_namespaced_pod(NS, label_selector=selector).items
        return sorted((self.to_dict(p) for p in listed), key=lambda p: p["metadata"]["name"])

    def replicasets(self, selector: str = "") -> list[Obj]:
        """Oldest revision first."""
        listed = self.apps.list_namespaced_replica_set(NS, label_selector=selector).items
        return sorted(
            (self.to_dict(r) for r in listed), key=lambda r: int(r["metadata"]["annotations"][REVISION])
        )

    def deployment(self, name: str) -> Obj:
        return self.to_dict(self.apps.read_namespaced_deployment(name, NS))

    def create_deployment(self, manifest: Obj) -> Obj:
        """Create it and wait until all its replicas are ready; the object as created."""
        created = self.to_dict(self.apps.create_namespaced_deployment(NS, manifest))
        name, replicas = manifest["metadata"]["name"], manifest["spec"]["replicas"]
        wait_until(
            lambda: self.deployment(name).get("status", {}).get("readyReplicas") == replicas, timeout=10
        )
        return created

    def slices(self, service: str) -> list[Obj]:
        listed = self.discovery.list_namespaced_endpoint_slice(
            NS, label_selector=f"{SERVICE_NAME_LABEL}={service}"
        )
        return [self.to_dict(s) for s in listed.items]


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """Start a server with these controllers and one Ready node; stopped at the end of the test."""
    with contextlib.ExitStack() as stack:

        def start(*controllers: Controller, gpus: int = 0) -> Cluster:
            server = stack.enter_context(KubeTestServer(controllers=controllers))
            server.call(lambda store: register_node(store, node("node-1", gpus=gpus)))
            configuration = client.Configuration()
            configuration.host = server.url
            api = stack.enter_context(client.ApiClient(configuration))
            return Cluster(
                server, client.CoreV1Api(api), client.AppsV1Api(api), client.DiscoveryV1Api(api), api
            )

        yield start


def all_controllers(runtime: Any = None) -> list[Controller]:
    return [DeploymentController(), EndpointSliceController(), Scheduler(), Kubelet(runtime)]


APP = {"name": "app", "image": "registry.local/app:1", "ports": [{"name": "http", "containerPort": 8080}]}


# --- a runtime the test steers: readiness, IPs and exits by pod name ------------------------------------


@dataclass
class FakeHandle:
    ip: str
    port: int | None = None
    is_ready: bool = True
    code: int | None = None
    terminated: bool = False
    hold: bool = False  # on SIGTERM, exit only when the test sets ``code``: the grace period shows

    def ready(self) -> bool:
        return self.is_ready

    def terminate(self) -> None:
        self.terminated = True
        if not self.hold:
            self.code = 0

    def kill(self) -> None:
        self.code = -9

    def exited(self) -> int | None:
        return self.code


@dataclass
class FakeRuntime:
    ips: dict[str, str] = field(default_factory=dict)
    not_ready: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)
    handles: dict[str, FakeHandle] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, pod: Obj) -> FakeHandle:
        name = pod["metadata"]["name"]
        with self.lock:
            ip = self.ips.get(name) or f"10.1.0.{len(self.handles) + 2}"
            handle = FakeHandle(ip, 8080, is_ready=name not in self.not_ready, hold=name in self.hold)
            self.handles[name] = handle
        return handle

    def set_ready(self, name: str, ready: bool) -> None:
        with self.lock:
            self.handles[name].is_ready = ready


# --- Deployments -------------------------------------------------------------------------------------


def test_deployment_creates_a_replicaset_and_ready_pods(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(*all_controllers())
    created = c.create_deployment(deployment(APP, replicas=3))

    d = c.deployment("web")
    (rs,) = c.replicasets()
    digest = rs["metadata"]["labels"][POD_TEMPLATE_HASH]
    assert digest == template_hash(created["spec"]["template"])
    assert len(digest) == 10
    assert rs["metadata"]["name"] == f"web-{digest}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", POD_TEMPLATE_HASH: digest}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", POD_TEMPLATE_HASH: digest}
    assert rs["metadata"]["annotations"][REVISION] == "1"
    (owner,) = rs["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", "web", d["metadata"]["uid"])
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    assert rs["status"] == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }

    pods = c.pods("app=web")
    assert len(pods) == 3
    for pod in pods:
        assert pod["metadata"]["generateName"] == f"{rs['metadata']['name']}-"
        assert pod["metadata"]["labels"][POD_TEMPLATE_HASH] == digest
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("ReplicaSet", rs["metadata"]["uid"], True)
        assert pod["spec"]["nodeName"] == "node-1"
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"].startswith("10.244.")
        assert condition(pod, "Ready")["status"] == "True"
    assert len({p["status"]["podIP"] for p in pods}) == 3

    status = d["status"]
    # Zero counts are left out, as the real controller's omitempty fields are.
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    assert condition(d, "Available")["reason"] == "MinimumReplicasAvailable"
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert (
        condition(d, "Progressing")["message"]
        == f'ReplicaSet "{rs["metadata"]["name"]}" has successfully progressed.'
    )

    # Settled: no controller keeps writing (a write loop would move the store's revision).
    before = c.server.call(lambda store: store.revision)
    time.sleep(0.7)
    assert c.server.call(lambda store: store.revision) == before


def test_scale_down_deletes_the_pods_with_the_lowest_deletion_cost(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(*all_controllers())
    c.create_deployment(deployment(APP, replicas=3))
    names = [p["metadata"]["name"] for p in c.pods("app=web")]
    # The first by name is also the one a tie would delete first: only its cost can keep it.
    costs = {names[0]: "100", names[1]: "-5", names[2]: "3"}
    for name, cost in costs.items():
        c.core.patch_namespaced_pod(name, NS, {"metadata": {"annotations": {DELETION_COST: cost}}})

    c.apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 1}})

    wait_until(lambda: [p["metadata"]["name"] for p in c.pods("app=web")] == [names[0]], timeout=10)
    wait_until(lambda: c.deployment("web")["status"].get("replicas") == 1, timeout=10)
    d = c.deployment("web")
    assert d["status"]["readyReplicas"] == 1
    assert "unavailableReplicas" not in d["status"]


def test_scale_down_prefers_not_ready_pods_over_a_higher_deletion_cost(
    cluster_factory: Callable[..., Cluster],
) -> None:
    runtime = FakeRuntime()
    c = cluster_factory(*all_controllers(runtime))
    c.create_deployment(deployment(APP, replicas=3))
    names = [p["metadata"]["name"] for p in c.pods("app=web")]
    unready = names[1]
    c.core.patch_namespaced_pod(unready, NS, {"metadata": {"annotations": {DELETION_COST: "1000"}}})
    runtime.set_ready(unready, False)
    wait_until(lambda: c.deployment("web")["status"].get("readyReplicas") == 2, timeout=10)
    d = c.deployment("web")
    assert d["status"]["unavailableReplicas"] == 1
    assert d["status"]["availableReplicas"] == 2

    c.apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})

    wait_until(lambda: unready not in [p["metadata"]["name"] for p in c.pods("app=web")], timeout=10)
    assert [p["metadata"]["name"] for p in c.pods("app=web")] == [n for n in names if n != unready]
    assert runtime.handles[unready].terminated  # the kubelet stopped the process playing it
    wait_until(lambda: c.deployment("web")["status"].get("readyReplicas") == 2, timeout=10)


def test_a_template_change_rolls_to_a_new_replicaset_within_max_unavailable(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(*all_controllers())
    c.create_deployment(deployment(APP, replicas=2))
    (old,) = c.replicasets()
    counts: list[tuple[int, int]] = []

    def count(store: Store) -> tuple[int, int]:
        pods = [
            p
            for p in store.items(store.type("", "v1", "pods"), NS)
            if not p["metadata"].get("deletionTimestamp")
        ]
        return len(pods), sum(1 for p in pods if pod_ready(p))

    # Counted after every write. Replicas 2 with the default 25%: maxUnavailable 0 (rounded down) and
    # maxSurge 1 (rounded up), so never fewer than 2 serving pods, never more than 3 pods.
    c.server.call(lambda store: store.listeners.append(lambda _: counts.append(count(store))))

    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.local/app:2"}]}}}
    }
    c.apps.patch_namespaced_deployment("web", NS, patch)

    def rolled() -> bool:
        d = c.deployment("web")
        rses = c.replicasets()
        pods = c.pods("app=web")
        return (
            len(rses) == 2
            and rses[1]["spec"]["replicas"] == 2
            and rses[1].get("status", {}).get("readyReplicas") == 2
            and rses[0]["spec"]["replicas"] == 0
            and len(pods) == 2
            and d["status"].get("updatedReplicas") == 2
            and d["status"].get("replicas") == 2
            and d["status"].get("readyReplicas") == 2
        )

    wait_until(rolled, timeout=15)
    old_now, new = c.replicasets()
    assert old_now["metadata"]["uid"] == old["metadata"]["uid"]  # kept as history, scaled to zero
    assert new["metadata"]["annotations"][REVISION] == "2"
    assert new["metadata"]["labels"][POD_TEMPLATE_HASH] != old["metadata"]["labels"][POD_TEMPLATE_HASH]
    assert all(
        p["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"] for p in c.pods("app=web")
    )
    assert {p["spec"]["containers"][0]["image"] for p in c.pods("app=web")} == {"registry.local/app:2"}
    d = c.deployment("web")
    assert (
        condition(d, "Progressing")["message"]
        == f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.'
    )
    assert counts
    assert max(total for total, _ in counts) == 3
    assert min(ready for _, ready in counts) == 2


def test_recreate_starts_the_new_pods_once_every_old_one_is_gone(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(*all_controllers())
    manifest = deployment(APP, replicas=2)
    manifest["spec"]["strategy"] = {"type": "Recreate"}
    c.create_deployment(manifest)
    images: list[set[str]] = []

    def running_images(store: Store) -> set[str]:
        pods = store.items(store.type("", "v1", "pods"), NS)
        return {p["spec"]["containers"][0]["image"] for p in pods if p["status"].get("phase") == "Running"}

    c.server.call(lambda store: store.listeners.append(lambda _: images.append(running_images(store))))
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.local/app:2"}]}}}
    }
    c.apps.patch_namespaced_deployment("web", NS, patch)

    wait_until(
        lambda: (
            [p["spec"]["containers"][0]["image"] for p in c.pods("app=web")] == ["registry.local/app:2"] * 2
            and c.deployment("web")["status"].get("readyReplicas") == 2
        ),
        timeout=15,
    )
    assert {"registry.local/app:2"} in images
    assert all(len(running) <= 1 for running in images)  # never old and new at once


def test_pods_to_delete_follows_the_replicaset_controllers_ranking() -> None:
    def pod(
        name: str,
        node: str = "node-1",
        phase: str = "Running",
        ready_since: str | None = "2024-01-01T00:00:00Z",
        cost: int = 0,
        restarts: int = 0,
        created: str = "2024-01-01T00:00:00Z",
    ) -> Obj:
        conditions = (
            [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}] if ready_since else []
        )
        return {
            "metadata": {
                "name": name,
                "creationTimestamp": created,
                "annotations": {DELETION_COST: str(cost)},
            },
            "spec": {"nodeName": node},
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{"restartCount": restarts}],
            },
        }

    expected = [
        pod("unassigned", node="", phase="Pending", ready_since=None),
        pod("pending", phase="Pending", ready_since=None),
        pod("not-ready", ready_since=None, cost=50),
        pod("cheap", cost=-1),
        pod("ready-later", ready_since="2024-01-01T00:05:00Z"),
        pod("restarted", restarts=3),
        pod("newer", created="2024-01-01T00:01:00Z"),
    ]
    keeper = pod("keeper")
    shuffled = [
        expected[3],
        keeper,
        expected[6],
        expected[0],
        expected[5],
        expected[2],
        expected[4],
        expected[1],
    ]

    chosen = pods_to_delete(shuffled, len(expected))

    assert [p["metadata"]["name"] for p in chosen] == [p["metadata"]["name"] for p in expected]


def test_deleting_a_deployment_cascades_to_its_replicaset_and_pods(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(*all_controllers())
    c.create_deployment(deployment(APP, replicas=2))
    assert len(c.replicasets()) == 1

    c.apps.delete_namespaced_deployment("web", NS)

    wait_until(lambda: not c.replicasets() and not c.pods(), timeout=10)
    with pytest.raises(ApiException) as raised:
        c.apps.read_namespaced_deployment("web", NS)
    assert raised.value.status == 404


# --- EndpointSlices -------------------------------------------------------------------------------------


def plain_pod(name: str, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web", **labels}},
        "spec": {"containers": [copy.deepcopy(APP)]},
    }


def test_endpointslice_lists_ready_not_ready_and_terminating_pods(
    cluster_factory: Callable[..., Cluster],
) -> None:
    runtime = FakeRuntime(
        ips={"ready": "10.1.0.10", "not-ready": "10.1.0.11", "leaving": "10.1.0.12", "local": "127.0.0.2"},
        not_ready={"not-ready"},
        hold={"leaving"},
    )
    c = cluster_factory(*all_controllers(runtime))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    svc = c.to_dict(c.core.create_namespaced_service(NS, service))
    for name in ("ready", "not-ready", "leaving", "local"):
        c.core.create_namespaced_pod(NS, plain_pod(name))
    c.core.create_namespaced_pod(
        NS, {**plain_pod("other"), "metadata": {"name": "other", "labels": {"app": "x"}}}
    )

    def endpoints() -> dict[str, Obj]:
        (es,) = c.slices("web") or [{}]
        return {e["targetRef"]["name"]: e for e in es.get("endpoints") or []}

    wait_until(
        lambda: (
            set(endpoints()) == {"ready", "not-ready", "leaving"}
            and endpoints()["leaving"]["conditions"]["ready"]
        ),
        timeout=10,
    )
    (es,) = c.slices("web")
    assert es["metadata"]["name"].startswith("web-")
    assert len(es["metadata"]["name"]) == len("web-") + 5
    assert es["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    (owner,) = es["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Service",
        "web",
        svc["metadata"]["uid"],
        True,
    )
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"}
    ]  # the named targetPort, resolved
    eps = endpoints()
    assert eps["ready"]["addresses"] == ["10.1.0.10"]
    assert eps["ready"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["ready"]["nodeName"] == "node-1"
    ready_pod = c.to_dict(c.core.read_namespaced_pod("ready", NS))
    assert eps["ready"]["targetRef"] == {
        "kind": "Pod",
        "namespace": NS,
        "name": "ready",
        "uid": ready_pod["metadata"]["uid"],
    }
    # Not ready is listed, not left out.
    assert eps["not-ready"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    # The loopback pod runs and is ready, but a real API server refuses its address in a slice.
    local = c.to_dict(c.core.read_namespaced_pod("local", NS))
    assert local["status"]["podIP"] == "127.0.0.2"
    assert condition(local, "Ready")["status"] == "True"

    c.core.delete_namespaced_pod("leaving", NS, grace_period_seconds=30)
    wait_until(
        lambda: endpoints().get("leaving", {}).get("conditions", {}).get("terminating") is True, timeout=10
    )
    assert endpoints()["leaving"]["conditions"] == {"ready": False, "serving": False, "terminating": True}
    assert runtime.handles["leaving"].terminated
    assert c.to_dict(c.core.read_namespaced_pod("leaving", NS))["metadata"]["deletionTimestamp"]

    runtime.handles["leaving"].code = 0  # the process exits: the kubelet finishes the deletion
    wait_until(lambda: "leaving" not in endpoints(), timeout=10)
    with pytest.raises(ApiException) as raised:
        c.core.read_namespaced_pod("leaving", NS)
    assert raised.value.status == 404

    deleted = c.core.delete_namespaced_service("web", NS)  # the Service itself comes back, as on a cluster
    assert deleted.metadata.name == "web"
    wait_until(lambda: not c.slices("web"), timeout=10)


def test_a_loopback_address_in_an_endpointslice_is_refused_with_422(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-manual"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.2"]}],
        "ports": [],
    }
    with pytest.raises(ApiException) as raised:
        c.discovery.create_namespaced_endpoint_slice(NS, body)
    assert raised.value.status == 422
    assert "loopback" in str(raised.value.body)


# --- Scheduler ----------------------------------------------------------------------------------------


def gpu_pod(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "image": "registry.local/worker:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }


def test_a_gpu_pod_waits_unschedulable_until_the_node_has_a_gpu(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(*all_controllers(), gpus=0)
    c.core.create_namespaced_pod(NS, gpu_pod("gpu-1"))

    def scheduled(name: str) -> Obj:
        return condition(c.to_dict(c.core.read_namespaced_pod(name, NS)), "PodScheduled")

    wait_until(lambda: scheduled("gpu-1").get("reason") == "Unschedulable", timeout=10)
    cond = scheduled("gpu-1")
    assert cond["status"] == "False"
    assert cond["message"] == (
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    )
    pod = c.to_dict(c.core.read_namespaced_pod("gpu-1", NS))
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")

    # What the kind e2e does to fake a GPU: the node's status gets the extended resource.
    c.core.patch_node_status(
        "node-1", {"status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}}}
    )

    wait_until(
        lambda: c.to_dict(c.core.read_namespaced_pod("gpu-1", NS))["status"]["phase"] == "Running", timeout=10
    )
    pod = c.to_dict(c.core.read_namespaced_pod("gpu-1", NS))
    assert pod["spec"]["nodeName"] == "node-1"
    assert scheduled("gpu-1")["status"] == "True"

    # The one GPU is taken: a second GPU pod waits.
    c.core.create_namespaced_pod(NS, gpu_pod("gpu-2"))
    wait_until(lambda: scheduled("gpu-2").get("reason") == "Unschedulable", timeout=10)
    assert scheduled("gpu-2")["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", 0.5),
        ("2", 2),
        ("1Gi", 2**30),
        ("128Mi", 128 * 2**20),
        ("1e3", 1000),
        ("1.5k", 1500),
        ("0", 0),
    ],
)
def test_quantities_parse_as_the_api_server_reads_them(text: str, value: float) -> None:
    assert parse_quantity(text) == value


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity("12 apples")


# --- Kubelet with real processes ----------------------------------------------------------------------


@dataclass
class ProcessHandle:
    """A pod played by ``python -m http.server`` on its own loopback address."""

    pod: Obj
    ip: str
    port: int | None
    proc: subprocess.Popen[bytes]

    async def ready(self) -> bool:
        url = readiness_url(self.pod, self.ip, self.port)
        return url is not None and await http_ready(url)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def exited(self) -> int | None:
        return self.proc.poll()


# An http.server that drains on SIGTERM: it serves 0.3 s more, then exits 0, as a well-behaved pod does.
DRAINING_SERVER = """
import functools, http.server, signal, sys, threading, time
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer((host, port), handler)
drain = lambda: (time.sleep(0.3), server.shutdown())
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=drain).start())
server.serve_forever()
"""


@dataclass
class HttpServerRuntime:
    root: Path
    draining: bool = False
    started: list[ProcessHandle] = field(default_factory=list)
    _next: int = 2

    def start(self, pod: Obj) -> ProcessHandle:
        ip = f"127.0.0.{self._next}"
        self._next += 1
        port = free_port(ip)
        if self.draining:
            command = [sys.executable, "-c", DRAINING_SERVER, ip, str(port), str(self.root)]
        else:
            command = [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                ip,
                "--directory",
                str(self.root),
            ]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        handle = ProcessHandle(pod, ip, port, proc)
        self.started.append(handle)
        return handle

    def stop_all(self) -> None:
        for handle in self.started:
            if handle.proc.poll() is None:
                handle.proc.kill()
            handle.proc.wait(timeout=10)


@pytest.fixture
def http_runtime(tmp_path: Path) -> Iterator[HttpServerRuntime]:
    (tmp_path / "index.html").write_text("ok\n")
    runtime = HttpServerRuntime(tmp_path)
    yield runtime
    runtime.stop_all()


def probed_pod(name: str) -> Obj:
    container = {
        "name": "http",
        "image": "python:3.11",
        "ports": [{"containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8000}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]},
    }


def test_a_process_plays_the_pod_ip_readiness_restart_and_sigterm(
    cluster_factory: Callable[..., Cluster], http_runtime: HttpServerRuntime
) -> None:
    c = cluster_factory(Scheduler(), Kubelet(http_runtime))
    c.core.create_namespaced_pod(NS, probed_pod("served"))

    def pod() -> Obj:
        return c.to_dict(c.core.read_namespaced_pod("served", NS))

    wait_until(lambda: condition(pod(), "Ready").get("status") == "True", timeout=10)
    first = http_runtime.started[0]
    p = pod()
    assert p["status"]["podIP"] == first.ip == "127.0.0.2"
    assert p["status"]["phase"] == "Running"
    assert p["status"]["containerStatuses"][0]["ready"] is True
    assert httpx.get(f"http://{first.ip}:{first.port}/").status_code == 200  # the pod is that process

    # The process dies by itself: restartPolicy Always starts it again and counts the restart.
    os.kill(first.proc.pid, signal.SIGKILL)
    wait_until(
        lambda: (
            pod()["status"]["containerStatuses"][0]["restartCount"] == 1
            and condition(pod(), "Ready").get("status") == "True"
        ),
        timeout=10,
    )
    second = http_runtime.started[-1]
    assert second is not first
    last = pod()["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 128 + signal.SIGKILL
    assert pod()["status"]["podIP"] == second.ip

    # Deletion: SIGTERM to the process (http.server dies of it), and the pod goes.
    c.core.delete_namespaced_pod("served", NS)
    wait_until(lambda: pod_gone(c, "served") and second.proc.poll() is not None, timeout=10)
    assert second.proc.poll() == -signal.SIGTERM


def pod_gone(c: Cluster, name: str) -> bool:
    try:
        c.core.read_namespaced_pod(name, NS)
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


def test_a_deleted_pod_stays_terminating_until_its_process_has_exited(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("ok\n")
    runtime = HttpServerRuntime(tmp_path, draining=True)
    c = cluster_factory(Scheduler(), Kubelet(runtime))
    try:
        c.core.create_namespaced_pod(NS, probed_pod("draining"))
        wait_until(lambda: pod_ready(c.to_dict(c.core.read_namespaced_pod("draining", NS))), timeout=10)
        (handle,) = runtime.started
        seen: list[tuple[str, str, bool, int | None]] = []

        def record(change: Any) -> None:
            if change.plural == "pods" and change.obj["metadata"]["name"] == "draining":
                phase = change.obj.get("status", {}).get("phase", "")
                seen.append((change.type, phase, pod_ready(change.obj), handle.proc.poll()))

        c.server.call(lambda store: store.listeners.append(record))
        c.core.delete_namespaced_pod("draining", NS, grace_period_seconds=10)
        wait_until(lambda: pod_gone(c, "draining"), timeout=10)
    finally:
        runtime.stop_all()

    # Marked not ready at once, while the process still drains...
    assert ("MODIFIED", "Running", False, None) in seen
    # ...then Succeeded (it exited 0 on SIGTERM), and gone only after the process had exited.
    *_, last_status, deleted = seen
    assert last_status == ("MODIFIED", "Succeeded", False, 0)
    assert deleted[0] == "DELETED"
    assert deleted[3] == 0
