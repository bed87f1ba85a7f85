"""The whole product on a real cluster (kind): the chart installs the operator from the image built here,
a GpuInferenceService of the sleep model comes up on (fake) GPU nodes, a burst through its Service scales
it up, scale-down under a lighter load takes only idle pods, every request is answered, and uninstalling
leaves nothing of the operator's behind.

Needs kind, docker (a running engine), kubectl and helm; skipped with the reason otherwise (E2E_REQUIRED=1
turns that skip into a failure, for CI). `make e2e` runs it; KIND_NODE_IMAGE picks the Kubernetes version,
KEEP_CLUSTER=1 keeps the cluster for a look afterwards (and a second run reuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from gpuscale.kube import objects
from gpuscale.spec import GpuInferenceService, parse_service

from tests.conftest import free_port
from tests.e2e import cluster
from tests.e2e.cluster import NAMESPACE, Kube

_MISSING = cluster.missing_tools()
if _MISSING is not None:
    if os.environ.get("E2E_REQUIRED") == "1":
        pytest.fail(f"E2E_REQUIRED=1, but {_MISSING}", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)

pytestmark = pytest.mark.e2e

EXAMPLE = cluster.REPO / "examples" / "sleep.yaml"
HEALTH_READY = "/v2/health/ready"
BURST_CLIENTS = 16
BURST_SECONDS = 20.0
# Clients that go on after the burst, while the autoscaler scales down: each request then runs for
# STEADY_REQUEST_SECONDS, so that replicas are busy as victims are picked.
STEADY_CLIENTS = 2
STEADY_REQUEST_SECONDS = 3.0
# After the replicas reach STEADY_CLIENTS, the steady load goes on this long: the victims' preStop
# delay and drain then happen under load too.
STEADY_AFTER_SCALE_DOWN = 12.0
SCALE_DOWN_TIMEOUT = 180.0
# The gateway's queue timeout (120 s in the example) plus the longest request.
REQUEST_TIMEOUT = 150.0
DRAIN_LINE = re.compile(r"SIGTERM: draining (\d+) running and (\d+) queued")


def e2e_manifest() -> dict[str, Any]:
    """examples/sleep.yaml as a GPU service: one (fake) GPU per replica, so the pods schedule only on the
    GPU workers, and the image loaded into kind (never pulled)."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = NAMESPACE
    spec = doc["spec"]
    spec["image"] = cluster.INFERENCE_IMAGE
    spec["gpusPerReplica"] = 1
    key, value = cluster.GPU_NODE_LABEL
    spec["template"]["nodeSelector"] = {key: value}
    spec["template"]["imagePullPolicy"] = "Never"
    return doc


# The names the operator gives the service's objects come from the code that builds them.
MANIFEST = e2e_manifest()
SERVICE: GpuInferenceService = parse_service(MANIFEST, str(EXAMPLE))
NAME = SERVICE.name
MODEL = objects.model_name(SERVICE)
GATEWAY = objects.gateway_name(SERVICE)
MODEL_SELECTOR = objects.label_selector(SERVICE, "model")
MODEL_NAME = next(e.value for e in SERVICE.spec.template.env if e.name == "GPUSCALE_MODEL")
INFER = f"/v2/models/{MODEL_NAME}/infer"
MANAGED = f"{objects.MANAGED_BY_LABEL}={objects.MANAGER}"


# The service


def namespace_manifest() -> str:
    """The service's namespace enforces the restricted Pod Security Standard: a pod of the operator's
    that broke it would be refused by the API server."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )


@pytest.fixture(scope="module")
def service(kube: Kube) -> Iterator[str]:
    kube.apply(namespace_manifest())
    kube.apply(yaml.safe_dump(MANIFEST))
    cluster.poll(
        "the operator creating the gateway", lambda: kube.exists("deployment", GATEWAY, "-n", NAMESPACE), 120
    )
    kube.kubectl("rollout", "status", f"deployment/{GATEWAY}", "-n", NAMESPACE, "--timeout=180s", timeout=200)
    kube.kubectl(
        "wait", f"gis/{NAME}", "-n", NAMESPACE, "--for=condition=Ready", "--timeout=300s", timeout=320
    )
    yield NAME
    kube.kubectl(
        "delete", f"gis/{NAME}", "-n", NAMESPACE, "--ignore-not-found", "--timeout=180s", timeout=200
    )


@contextlib.contextmanager
def port_forward(kube: Kube, target: str, remote_port: int, log: Path) -> Iterator[str]:
    """`kubectl port-forward` to the Service on a free local port, until the model answers through it."""
    port = free_port("127.0.0.1")
    kubectl = cluster.tool("kubectl") or "kubectl"
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [
                kubectl,
                "port-forward",
                "-n",
                NAMESPACE,
                target,
                f"{port}:{remote_port}",
                "--address=127.0.0.1",
            ],
            env=kube.env,
            stdout=subprocess.DEVNULL,  # a line per connection
            stderr=errors,
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"kubectl port-forward exited {proc.returncode}: {log.read_text()}")
            try:
                return httpx.get(url + HEALTH_READY, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            cluster.poll(f"{target} answering {HEALTH_READY} through port-forward", answers, 60, 0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# What the load saw, and what the cluster did meanwhile


@dataclass
class Outcome:
    lane: str  # "burst" or "steady"
    sent: float  # wall clock
    status: int | None
    error: str | None
    replica: str | None  # the pod that served it (the gateway's gpuscale-replica header)


@dataclass
class Sample:
    at: float  # wall clock
    replicas: int  # the model Deployment's spec.replicas: what the operator asked for
    ready: int
    pods: dict[str, dict[str, Any]]  # name -> {"node", "deleting", "gpus"}
    gis_header: list[str]
    gis_row: list[str]


@dataclass
class Watcher:
    """Samples the Deployment, its pods and `kubectl get gis` every second, and follows each model
    pod's log from its start to its exit (a deleted pod's log is gone with it)."""

    kube: Kube
    logs: Path
    samples: list[Sample] = field(default_factory=list)
    deleted_at: dict[str, float] = field(default_factory=dict)  # pod -> when first seen terminating
    followers: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="e2e-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()  # each kubectl call has its own timeout
        for proc, out in self.followers.values():
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            out.close()

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.samples.append(self._sample())
                self.stop.wait(1.0)
        except BaseException as exc:  # reported by the test that reads the samples
            self.error = exc

    def _sample(self) -> Sample:
        at = time.time()
        deployment = self.kube.get("deployment", MODEL, "-n", NAMESPACE)
        pods: dict[str, dict[str, Any]] = {}
        for pod in self.kube.get("pods", "-n", NAMESPACE, "-l", MODEL_SELECTOR)["items"]:
            name = pod["metadata"]["name"]
            deleting = pod["metadata"].get("deletionTimestamp") is not None
            container = pod["spec"]["containers"][0]
            pods[name] = {
                "node": pod["spec"].get("nodeName"),
                "deleting": deleting,
                "gpus": container.get("resources", {}).get("limits", {}).get(cluster.GPU_RESOURCE),
            }
            if deleting:
                self.deleted_at.setdefault(name, at)
            running = any("running" in s.get("state", {}) for s in pod["status"].get("containerStatuses", []))
            if running and name not in self.followers:
                self._follow(name)
        header, rows = cluster.table(self.kube.kubectl("get", "gis", NAME, "-n", NAMESPACE))
        return Sample(
            at=at,
            replicas=int(deployment["spec"].get("replicas", 0)),
            ready=int(deployment.get("status", {}).get("readyReplicas", 0)),
            pods=pods,
            gis_header=header,
            gis_row=rows[0] if rows else [],
        )

    def _follow(self, pod: str) -> None:
        out = (self.logs / f"{pod}.log").open("wb")
        proc = subprocess.Popen(
            [
                cluster.tool("kubectl") or "kubectl",
                "logs",
                "-f",
                f"pod/{pod}",
                "-n",
                NAMESPACE,
                "-c",
                objects.MODEL_CONTAINER,
            ],
            env=self.kube.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.followers[pod] = (proc, out)

    def log(self, pod: str) -> str:
        path = self.logs / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class LoadRun:
    outcomes: list[Outcome]
    samples: list[Sample]
    burst_end: float
    steady_end: float
    deleted_at: dict[str, float]
    logs: dict[str, str]
    logs_dir: Path
    final: Sample


async def drive(url: str, steady_done: Callable[[float], bool]) -> tuple[list[Outcome], float, float]:
    """BURST_CLIENTS closed-loop clients for BURST_SECONDS, STEADY_CLIENTS of them going on with longer
    requests until `steady_done(burst_end)`. One connection pool per lane group, each kept busy: a pool
    left idle would hold connections the gateway has closed (keep-alive), and a request sent on one of
    those fails for a reason that is not the server's."""
    outcomes: list[Outcome] = []
    burst_end = time.time() + BURST_SECONDS

    async def lane(client: httpx.AsyncClient, name: str, seconds: float, go_on: Callable[[], bool]) -> None:
        while go_on():
            sent = time.time()
            try:
                answer = await client.post(INFER, json={"parameters": {"seconds": seconds}})
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(name, sent, None, f"{type(exc).__name__}: {exc}", None))
            else:
                outcomes.append(
                    Outcome(name, sent, answer.status_code, None, answer.headers.get("gpuscale-replica"))
                )

    def pool(clients: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        return httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits)

    async with pool(BURST_CLIENTS - STEADY_CLIENTS) as burst, pool(STEADY_CLIENTS) as steady:
        burst_lanes = [
            lane(burst, "burst", 1.0, lambda: time.time() < burst_end)
            for _ in range(BURST_CLIENTS - STEADY_CLIENTS)
        ]
        # The steady clients are part of the burst, and go on after it.
        steady_lanes = [
            lane(
                steady,
                "steady",
                STEADY_REQUEST_SECONDS,
                lambda: not steady_done(burst_end),
            )
            for _ in range(STEADY_CLIENTS)
        ]
        await asyncio.gather(*burst_lanes, *steady_lanes)
    return outcomes, burst_end, time.time()


@pytest.fixture(scope="module")
def load_run(kube: Kube, service: str, tmp_path_factory: pytest.TempPathFactory) -> LoadRun:
    logs = tmp_path_factory.mktemp("model-pod-logs")
    forward_log = logs / "port-forward.log"
    min_replicas = SERVICE.spec.autoscaling.min_replicas
    with Watcher(kube, logs) as watcher:
        reached: list[float] = []

        def steady_done(burst_end: float) -> bool:
            now = time.time()
            if now < burst_end + 5:
                return False
            latest = watcher.latest()
            if latest is not None and latest.replicas <= STEADY_CLIENTS and not reached:
                reached.append(now)
            if reached and now - reached[0] >= STEADY_AFTER_SCALE_DOWN:
                return True
            return now > burst_end + SCALE_DOWN_TIMEOUT

        with port_forward(kube, f"service/{NAME}", objects.SERVICE_PORT, forward_log) as url:
            outcomes, burst_end, steady_end = asyncio.run(drive(url, steady_done))

        def settled() -> Sample | None:
            if watcher.error is not None:
                raise watcher.error
            latest = watcher.latest()
            if latest is None or latest.at < time.time() - 5:
                return None
            if latest.replicas == min_replicas and len(latest.pods) == min_replicas:
                return latest
            return None

        final = cluster.poll(f"{MODEL} back to {min_replicas} pod(s)", settled, SCALE_DOWN_TIMEOUT)
        # The victims' log streams end with their containers; give the last ones a moment.
        time.sleep(3)
    if watcher.error is not None:
        raise watcher.error
    return LoadRun(
        outcomes=outcomes,
        samples=watcher.samples,
        burst_end=burst_end,
        steady_end=steady_end,
        deleted_at=dict(watcher.deleted_at),
        logs={pod: watcher.log(pod) for pod in watcher.followers},
        logs_dir=logs,
        final=final,
    )


# The tests, in the order a user meets things


def test_chart_runs_the_operator_image(kube: Kube) -> None:
    deployments = kube.get("deployments", "-n", cluster.OPERATOR_NAMESPACE)["items"]
    operators = [
        d
        for d in deployments
        if any(c["image"] == cluster.OPERATOR_IMAGE for c in d["spec"]["template"]["spec"]["containers"])
    ]
    assert len(operators) == 1, [d["metadata"]["name"] for d in deployments]
    (operator,) = operators
    # Available: the image starts as uid 65532 on a read-only root filesystem, as the chart runs it.
    assert operator["status"].get("availableReplicas") == 1, operator["status"]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_comes_up_on_the_gpu_nodes(kube: Kube, service: str) -> None:
    gis = kube.get(f"gis/{service}", "-n", NAMESPACE)
    ready = next(c for c in gis["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready

    gateway = kube.get("deployment", GATEWAY, "-n", NAMESPACE)
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    # The chart's gatewayImage defaults to the operator's image, which runs the gateway.
    assert container["image"] == cluster.OPERATOR_IMAGE
    assert container["command"] == ["gpuscale", "gateway"]

    gpu_nodes = {name.removeprefix("node/") for name in cluster.gpu_nodes(kube)}
    pods = kube.get("pods", "-n", NAMESPACE, "-l", MODEL_SELECTOR)["items"]
    assert pods
    for pod in pods:
        model = pod["spec"]["containers"][0]
        assert model["image"] == cluster.INFERENCE_IMAGE
        assert model["resources"]["limits"][cluster.GPU_RESOURCE] == "1"
        assert model["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["nodeName"] in gpu_nodes, pod["spec"]["nodeName"]


def test_every_request_is_answered(load_run: LoadRun) -> None:
    burst = [o for o in load_run.outcomes if o.lane == "burst"]
    steady_after_burst = [o for o in load_run.outcomes if o.lane == "steady" and o.sent >= load_run.burst_end]
    # 14 clients on 1 s requests for 20 s, however few replicas served them.
    assert len(burst) >= BURST_CLIENTS - STEADY_CLIENTS
    assert steady_after_burst, "the steady clients sent nothing while the service scaled down"
    failed = [o for o in load_run.outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(load_run.outcomes)} failed, e.g. {failed[:5]}"


def test_a_burst_scales_up(kube: Kube, load_run: LoadRun) -> None:
    during = [s for s in load_run.samples if s.at <= load_run.burst_end + 5]
    assert max(s.replicas for s in during) > 1, [s.replicas for s in during]
    assert max(s.ready for s in during) > 1, [s.ready for s in during]
    served = {o.replica for o in load_run.outcomes if o.lane == "burst" and o.replica}
    assert len(served) > 1, served
    # Each replica holds one (fake) GPU, and so runs only where GPUs are.
    gpu_nodes = {name.removeprefix("node/") for name in cluster.gpu_nodes(kube)}
    for sample in load_run.samples:
        for pod, seen in sample.pods.items():
            assert seen["gpus"] == "1", (pod, seen)
            assert seen["node"] is None or seen["node"] in gpu_nodes, (pod, seen)


def test_get_gis_shows_the_printer_columns(load_run: LoadRun) -> None:
    crd = yaml.safe_load(cluster.CRD_FILE.read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    expected = ["NAME", *(c["name"].upper() for c in columns)]
    assert expected == ["NAME", "READY", "REPLICAS", "DESIRED", "QUEUED", "RUNNING", "AGE"]
    assert all(s.gis_header == expected for s in load_run.samples if s.gis_header)
    # A row with a cell not yet set (no status at first) has fewer words than the header.
    rows = [
        dict(zip(expected, s.gis_row, strict=True))
        for s in load_run.samples
        if len(s.gis_row) == len(expected)
    ]
    assert rows
    # The status behind the columns moved with the load: replicas up, requests queued or running.
    assert max(int(r["REPLICAS"]) for r in rows) > 1
    assert max(int(r["DESIRED"]) for r in rows) > 1
    assert max(float(r["QUEUED"]) + float(r["RUNNING"]) for r in rows) > 1
    assert rows[-1]["READY"] == "True"
    assert rows[-1]["NAME"] == NAME


def test_scale_down_takes_only_idle_pods(load_run: LoadRun) -> None:
    during_load = {pod: at for pod, at in load_run.deleted_at.items() if at <= load_run.steady_end}
    replicas = [s.replicas for s in load_run.samples]
    assert during_load, f"no model pod was removed while the steady load ran: replicas {replicas}"
    drains = {}
    for pod in load_run.deleted_at:
        found = DRAIN_LINE.search(load_run.logs.get(pod, ""))
        if found:
            drains[pod] = (int(found[1]), int(found[2]))
    assert drains, (
        f"no removed pod's drain was seen in its log ({load_run.logs_dir}): {sorted(load_run.deleted_at)}"
    )
    busy = {pod: load for pod, load in drains.items() if load != (0, 0)}
    assert not busy, f"pods stopped while holding (running, queued) requests: {busy} ({load_run.logs_dir})"


def test_scales_back_to_min_replicas(load_run: LoadRun) -> None:
    assert load_run.final.replicas == SERVICE.spec.autoscaling.min_replicas
    assert load_run.final.ready == SERVICE.spec.autoscaling.min_replicas


def leftovers(kube: Kube) -> list[str]:
    """Every object of every listable kind, in every namespace, that carries the operator's label."""
    kinds = kube.kubectl("api-resources", "--verbs=list", "-o", "name").split()
    listed = [k for k in kinds if not k.startswith(("events", "componentstatuses"))]
    return kube.names(",".join(listed), "-A", "-l", MANAGED)


def test_uninstall_leaves_nothing(kube: Kube, service: str) -> None:
    assert leftovers(kube), "the service's objects should carry the operator's label"
    # The CR first: the operator's finalizer on it needs the operator running to be released.
    kube.kubectl("delete", f"gis/{service}", "-n", NAMESPACE, "--timeout=180s", timeout=200)
    kube.helm(
        "uninstall", cluster.RELEASE, "--namespace", cluster.OPERATOR_NAMESPACE, "--wait", "--timeout", "3m"
    )

    cluster.poll("nothing labelled " + MANAGED, lambda: not leftovers(kube), 240, 3)
    cluster.poll(
        "the operator's pods gone",
        lambda: not kube.names("pods,deployments", "-n", cluster.OPERATOR_NAMESPACE),
        120,
    )
    # The chart keeps the CRD by default (crds.keep): deleting it would delete every user's services.
    assert kube.exists("crd", cluster.CRD_NAME)
