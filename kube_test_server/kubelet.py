"""The node side of a cluster: a scheduler that binds pods to Node objects and a kubelet that runs them.

``Scheduler`` binds pending pods to Nodes by fit: ``status.allocatable`` of ``cpu``, ``memory``, ``pods``
and extended resources such as ``nvidia.com/gpu`` against the requests of the pods already there (limits
stand in for missing requests, as the API server's defaulting does); ``nodeSelector``, NoSchedule and
NoExecute taints against tolerations, ``spec.unschedulable`` and a not-Ready node are honoured. A pod that
fits nowhere gets ``PodScheduled=False``, reason ``Unschedulable`` and the real scheduler's message
(``0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: ...``), and is tried again on every
change to a pod or a Node: patching a Node's allocatable (as the kind e2e fakes GPUs) schedules it.

``Kubelet`` plays every node's kubelet. It turns on the store's graceful pod deletion when it starts, so a
deleted pod on a node keeps a ``deletionTimestamp`` until the kubelet has stopped it. Without a runtime a
pod gets an IP ``10.244.x.y``, runs at once and becomes Ready after ``ready_after`` seconds; a deleted
one finishes after ``terminate_delay`` seconds, so watchers see it terminating first. With a ``Runtime``,
real local processes play the pods: the IP comes from the handle, readiness follows ``handle.ready()``
(polled every ``poll`` seconds), a process that exits by itself makes the pod Succeeded or Failed
(``restartPolicy: Never``, or ``OnFailure`` with exit 0) or is started again with a restart count
(``Always``, the Deployment default, and ``OnFailure`` with a failure), and a deleted pod is marked not
ready, sent SIGTERM (``terminate()``), given ``deletionGracePeriodSeconds`` to exit before ``kill()``, then
moved to its terminal phase and deleted for good with grace period 0 — the kubelet's order since 1.27.

Known simplifications (docs/kube-test-server.md lists them too):

* One handle per pod, whatever the number of containers: every container shares its state and readiness.
  Init containers and sidecars are not run. Probes' timing fields (initialDelaySeconds, periodSeconds,
  thresholds) are not honoured: readiness is polled every ``poll`` seconds; liveness is not probed.
* A restart waits ``restart_delay`` seconds (CrashLoopBackOff state meanwhile), not the real 10 s doubling
  up to 5 minutes. The pod's IP is the new handle's, where a real pod keeps its sandbox's.
* Binding is two writes (``spec.nodeName``, then the ``PodScheduled`` condition through ``/status``), not
  one ``pods/binding`` call; the scheduler picks, among nodes that fit, the one with the fewest pods. No
  affinity, topology spread, host ports, volumes or preemption (the message says what preemption would).
* A deleted pod is marked not ready at once. The real kubelet keeps probing readiness while the
  containers drain, so a real terminating endpoint can stay ``serving: true`` until the process stops.
* Node heartbeats, leases and the node lifecycle controller are not played: a Node is Ready if its
  status says so, and stays so.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import aiohttp

from kube_test_server.controllers import Reconciler, condition, parse_time, pod_ready, with_condition
from kube_test_server.errors import ApiError
from kube_test_server.resources import ResourceType
from kube_test_server.store import Change, DeleteOptions, Obj, Store, meta, now_rfc3339

log = logging.getLogger(__name__)

GPU = "nvidia.com/gpu"
DEFAULT_NODE_ADDRESS = "172.18.0.2"  # a kind node's

# --- quantities ----------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?")
_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(value: Any) -> Fraction:
    """A resource quantity (``500m``, ``2``, ``1Gi``, ``128Mi``, ``1e3``) as an exact number.

    Raises ValueError, with the real server's wording, for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, int | float):
        return Fraction(value)
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    if match.group(3):
        return number * _SUFFIXES[match.group(3)]
    return number


def _quantities(values: Any) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for name, value in (values or {}).items():
        try:
            out[name] = parse_quantity(value)
        except ValueError:
            log.debug("unreadable quantity %s=%r counts as 0", name, value)
    return out


def container_requests(container: Obj) -> dict[str, Fraction]:
    """A container's requests, limits standing in where a request is missing (the API defaulting)."""
    resources = container.get("resources") or {}
    return {**_quantities(resources.get("limits")), **_quantities(resources.get("requests"))}


def pod_requests(pod: Obj) -> dict[str, Fraction]:
    """What a pod asks of a node: its containers summed, at least its largest init container, and overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, amount in container_requests(container).items():
            total[name] = total.get(name, Fraction(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in container_requests(container).items():
            total[name] = max(total.get(name, Fraction(0)), amount)
    for name, amount in _quantities(spec.get("overhead")).items():
        total[name] = total.get(name, Fraction(0)) + amount
    return total


# --- nodes ---------------------------------------------------------------------------------------------


def node(
    name: str,
    gpus: int = 0,
    cpu: str = "16",
    memory: str = "64Gi",
    pods: int = 110,
    *,
    address: str = DEFAULT_NODE_ADDRESS,
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
) -> Obj:
    """A Ready Node as a kubelet registers it; ``gpus`` > 0 adds ``nvidia.com/gpu`` as device plugins do."""
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
    now = now_rfc3339()
    machine = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
    if gpus:
        capacity[GPU] = str(gpus)
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            # Every field: the official client's models refuse a NodeSystemInfo with one missing.
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": machine,
                "bootID": machine,
                "kernelVersion": "6.1.0",
                "osImage": "kube-test-server",
                "containerRuntimeVersion": "kube-test-server://0",
                "kubeletVersion": "v1.31.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }
    return obj


def register_node(store: Store, obj: Obj) -> Obj:
    """Create a Node with its status, as a kubelet registers one; returns the stored Node.

    A store that drops status on create (as it does for kinds with a status subresource) gets the status
    in a second write through ``/status``.
    """
    nodes = store.type("", "v1", "nodes")
    created = store.create(nodes, None, obj)
    if "status" in obj and created.get("status") != obj["status"]:
        created = store.replace(
            nodes, None, meta(created)["name"], {**created, "status": obj["status"]}, subresource="status"
        )
    return created


def _node_ready(n: Obj) -> bool:
    found = condition(n, "Ready")
    return found is None or found.get("status") == "True"


def _tolerates(pod: Obj, taint: Obj) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


# --- scheduler -----------------------------------------------------------------------------------------


@dataclass
class _NodeUse:
    requested: dict[str, Fraction] = field(default_factory=dict)
    pods: int = 0

    def add(self, requests: dict[str, Fraction]) -> None:
        self.pods += 1
        for name, amount in requests.items():
            self.requested[name] = self.requested.get(name, Fraction(0)) + amount


# Filter reasons the real scheduler marks UnschedulableAndUnresolvable: preemption cannot help there.
_UNRESOLVABLE_PREFIXES = (
    "node(s) didn't match",
    "node(s) had untolerated taint",
    "node(s) were unschedulable",
)


def _set_condition(store: Store, pods_t: ResourceType, pod: Obj, new: Obj) -> None:
    conditions = with_condition(list((pod.get("status") or {}).get("conditions") or []), new)
    m = meta(pod)
    patch = {"status": {"conditions": conditions}}
    store.patch(pods_t, m["namespace"], m["name"], "merge", patch, subresource="status")


class Scheduler(Reconciler):
    """Binds pending pods to Nodes by resource fit, node selector and taints (see the module docstring)."""

    name = "default-scheduler"
    watches = frozenset({("", "pods"), ("", "nodes")})

    def reconcile(self, store: Store) -> None:
        pods_t = store.type("", "v1", "pods")
        nodes = store.items(store.type("", "v1", "nodes"))  # by name; read, never changed
        use = {meta(n)["name"]: _NodeUse() for n in nodes}
        pending: list[Obj] = []
        for pod in store.items(pods_t):
            spec, phase = pod.get("spec") or {}, (pod.get("status") or {}).get("phase")
            if spec.get("nodeName"):
                if spec["nodeName"] in use and phase not in ("Succeeded", "Failed"):
                    use[spec["nodeName"]].add(pod_requests(pod))
            elif (
                spec.get("schedulerName", "default-scheduler") == "default-scheduler"
                and not meta(pod).get("deletionTimestamp")
                and phase not in ("Succeeded", "Failed")
            ):
                pending.append(pod)
        pending.sort(
            key=lambda p: (
                -int((p.get("spec") or {}).get("priority") or 0),
                meta(p).get("creationTimestamp") or "",
                meta(p)["name"],
            )
        )
        for pod in pending:
            m = meta(pod)
            with self.guard(f"pod {m['namespace']}/{m['name']}"):
                self._schedule(store, pods_t, pod, nodes, use)

    def _schedule(
        self, store: Store, pods_t: ResourceType, pod: Obj, nodes: list[Obj], use: dict[str, _NodeUse]
    ) -> None:
        m = meta(pod)
        requests = pod_requests(pod)
        fits: list[Obj] = []
        reasons: dict[str, int] = {}
        for n in nodes:
            why = self._filter(pod, n, requests, use[meta(n)["name"]])
            if why:
                for reason in why:
                    reasons[reason] = reasons.get(reason, 0) + 1
            else:
                fits.append(n)
        now = now_rfc3339(store.clock)
        if fits:
            chosen = min(fits, key=lambda n: (use[meta(n)["name"]].pods, meta(n)["name"]))
            name = meta(chosen)["name"]
            store.patch(pods_t, m["namespace"], m["name"], "merge", {"spec": {"nodeName": name}})
            use[name].add(requests)
            bound = store.get(pods_t, m["namespace"], m["name"])
            scheduled = {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            _set_condition(store, pods_t, bound, scheduled)
            return
        message = self._fit_error(len(nodes), reasons)
        current = condition(pod, "PodScheduled") or {}
        if (current.get("status"), current.get("reason"), current.get("message")) == (
            "False",
            "Unschedulable",
            message,
        ):
            return
        unschedulable = {
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
            "reason": "Unschedulable",
            "message": message,
        }
        _set_condition(store, pods_t, pod, unschedulable)
        log.debug("%s: pod %s/%s: %s", self.name, m["namespace"], m["name"], message)

    @staticmethod
    def _filter(pod: Obj, n: Obj, requests: dict[str, Fraction], use: _NodeUse) -> list[str]:
        """Why ``pod`` cannot go to ``n`` (empty: it fits), plugin by plugin as the default profile runs."""
        spec, node_spec, status = pod.get("spec") or {}, n.get("spec") or {}, n.get("status") or {}
        if node_spec.get("unschedulable") and not _tolerates(
            pod, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        ):
            return ["node(s) were unschedulable"]
        taints = list(node_spec.get("taints") or [])
        if not _node_ready(n):
            taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
        for taint in taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, taint):
                return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
        labels = meta(n).get("labels") or {}
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return ["node(s) didn't match Pod's node affinity/selector"]
        allocatable = _quantities(status.get("allocatable") or status.get("capacity"))
        insufficient: list[str] = []
        if use.pods + 1 > allocatable.get("pods", Fraction(0)):
            insufficient.append("Too many pods")
        for name in sorted(requests):
            amount = requests[name]
            if name == "pods" or amount <= 0:
                continue
            free = allocatable.get(name, Fraction(0)) - use.requested.get(name, Fraction(0))
            if amount > free:
                insufficient.append(f"Insufficient {name}")
        return insufficient

    @staticmethod
    def _fit_error(total: int, reasons: dict[str, int]) -> str:
        """``FitError.Error()`` with the preemption post-filter's message, as a real pod event shows it."""
        if total == 0:
            return "no nodes available to schedule pods"
        histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        message = f"0/{total} nodes are available: {histogram}."
        unresolvable = sum(c for r, c in reasons.items() if r.startswith(_UNRESOLVABLE_PREFIXES))
        preemption = {}
        if total - unresolvable:
            preemption["No preemption victims found for incoming pod"] = total - unresolvable
        if unresolvable:
            preemption["Preemption is not helpful for scheduling"] = unresolvable
        listed = ", ".join(sorted(f"{count} {reason}" for reason, count in preemption.items()))
        return f"{message} preemption: 0/{total} nodes are available: {listed}."


# --- kubelet -------------------------------------------------------------------------------------------


class PodHandle(Protocol):
    """One running pod, as a runtime started it."""

    ip: str
    port: int | None

    def ready(self) -> bool | Awaitable[bool]: ...

    def terminate(self) -> None: ...  # SIGTERM: stop gracefully

    def kill(self) -> None: ...  # SIGKILL

    def exited(self) -> int | None: ...  # the return code once the process has ended


class Runtime(Protocol):
    def start(self, pod: Obj) -> PodHandle: ...


def readiness_url(pod: Obj, ip: str, port: int | None) -> str | None:
    """Where the pod's first httpGet readinessProbe would probe, at ``ip:port`` (None: no such probe)."""
    if port is None:
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        http = (container.get("readinessProbe") or {}).get("httpGet")
        if isinstance(http, dict):
            path = http.get("path") or "/"
            scheme = str(http.get("scheme") or "HTTP").lower()
            return f"{scheme}://{ip}:{port}{path if path.startswith('/') else '/' + path}"
    return None


async def http_ready(url: str, probe_timeout: float = 1.0) -> bool:
    """An httpGet probe: 200-399 is ready, anything else (refused, timed out) is not."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=probe_timeout)) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            return 200 <= response.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def _wait_exit(handle: PodHandle, seconds: float, step: float = 0.05) -> int | None:
    """The handle's return code once it exits, or None after ``seconds``."""
    for _ in range(max(1, round(seconds / step))):
        code = handle.exited()
        if code is not None:
            return code
        await asyncio.sleep(step)
    return handle.exited()


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: the 128+N a container runtime reports


@dataclass
class _Run:
    """What the kubelet knows of one pod it runs."""

    uid: str
    handle: PodHandle | None = None
    started: bool = False
    started_at: str = ""
    started_mono: float = 0.0
    ip: str = ""
    restarts: int = 0
    last_state: Obj = field(default_factory=dict)
    restart_at: float | None = None
    waiting: Obj | None = None
    host_ip: str = DEFAULT_NODE_ADDRESS
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Kubelet(Reconciler):
    """Runs the pods bound to nodes (see the module docstring). ``nodes``: only pods on these nodes."""

    name = "kubelet"
    watches = frozenset({("", "pods")})

    def __init__(
        self,
        runtime: Runtime | None = None,
        ready_after: float = 0.0,
        *,
        nodes: Collection[str] | None = None,
        poll: float = 0.2,
        terminate_delay: float = 0.1,
        restart_delay: float = 0.5,
        resync: float = 0.5,
    ) -> None:
        super().__init__(resync)
        self.runtime = runtime
        self.ready_after = ready_after
        self.nodes = set(nodes) if nodes is not None else None
        self.poll = poll
        self.terminate_delay = terminate_delay
        self.restart_delay = restart_delay
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Pods whose deletion the kubelet has finished but a finalizer still holds: not to be run again.
        self._finished: set[str] = set()
        self._next_ip = 0
        self._clock: Callable[[], float] = time.time

    @staticmethod
    def _host_ip(store: Store, node_name: str) -> str:
        try:
            found = store.get(store.type("", "v1", "nodes"), None, node_name)
        except ApiError:
            return DEFAULT_NODE_ADDRESS
        for address in (found.get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP" and address.get("address"):
                return str(address["address"])
        return DEFAULT_NODE_ADDRESS

    async def run(self, store: Store) -> None:
        self._clock = store.clock
        store.graceful_pods = True
        try:
            await super().run(store)
        finally:
            await self._shutdown()

    def notice(self, change: Change) -> None:
        if (change.group, change.plural) == ("", "pods"):
            run = self._runs.get(meta(change.obj).get("uid") or "")
            if run is not None:
                run.wake.set()

    def reconcile(self, store: Store) -> None:
        pods_t = store.type("", "v1", "pods")
        present: set[str] = set()
        for pod in store.items(pods_t):
            m, spec = meta(pod), pod.get("spec") or {}
            uid = m["uid"]
            present.add(uid)
            node_name = spec.get("nodeName")
            if (
                not node_name
                or (self.nodes is not None and node_name not in self.nodes)
                or uid in self._tasks
                or uid in self._finished
            ):
                continue
            self._runs[uid] = _Run(uid)
            self._tasks[uid] = asyncio.create_task(
                self._worker(store, pods_t, m["namespace"], m["name"], uid),
                name=f"kubelet {m['namespace']}/{m['name']}",
            )
        self._finished &= present

    # --- one pod ------------------------------------------------------------------------------------------

    async def _worker(self, store: Store, pods_t: ResourceType, namespace: str, name: str, uid: str) -> None:
        run = self._runs[uid]
        loop = asyncio.get_running_loop()
        try:
            while True:
                run.wake.clear()
                pod = self._current(store, pods_t, namespace, name, uid)
                if pod is None:
                    return  # force-deleted: the finally stops what runs
                if meta(pod).get("deletionTimestamp"):
                    await self._terminate(store, pods_t, pod, run)
                    self._finished.add(uid)
                    return
                wait = self.poll
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    wait = await self._step(store, pods_t, pod, run, loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.wake.wait(), max(0.0, wait))
        except Exception:
            log.exception("%s: pod %s/%s failed", self.name, namespace, name)
        finally:
            self._stop(run)
            self._runs.pop(uid, None)
            self._tasks.pop(uid, None)

    @staticmethod
    def _current(store: Store, pods_t: ResourceType, namespace: str, name: str, uid: str) -> Obj | None:
        try:
            pod = store.get(pods_t, namespace, name)
        except ApiError:
            return None
        return pod if meta(pod).get("uid") == uid else None

    async def _step(self, store: Store, pods_t: ResourceType, pod: Obj, run: _Run, now: float) -> float:
        """Start, restart or watch one pod; returns how long to wait before the next step at most."""
        if run.restart_at is not None and now < run.restart_at:
            return run.restart_at - now
        if (not run.started or run.restart_at is not None) and not self._start(store, pod, run, now):
            self._write(store, pods_t, pod, self._status(pod, run, ready=False))
            return self.restart_delay
        if run.handle is not None:
            code = run.handle.exited()
            if code is not None:
                return self._exited(store, pods_t, pod, run, _exit_code(code), now)
            ready = await self._handle_ready(pod, run.handle)
            wait = self.poll
        else:
            ready = now >= run.started_mono + self.ready_after
            wait = self.poll if ready else min(self.poll, run.started_mono + self.ready_after - now)
        # The readiness check awaited: the pod may have changed meanwhile, so the write starts from it anew.
        fresh = self._current(store, pods_t, meta(pod)["namespace"], meta(pod)["name"], run.uid)
        if fresh is not None and not meta(fresh).get("deletionTimestamp"):
            self._write(store, pods_t, fresh, self._status(fresh, run, ready=ready))
        return wait

    def _start(self, store: Store, pod: Obj, run: _Run, now: float) -> bool:
        run.host_ip = self._host_ip(store, (pod.get("spec") or {}).get("nodeName") or "")
        run.restart_at = None
        run.waiting = None
        if self.runtime is not None:
            try:
                run.handle = self.runtime.start(pod)
            except Exception as exc:
                log.warning(
                    "%s: pod %s/%s did not start: %s",
                    self.name,
                    meta(pod)["namespace"],
                    meta(pod)["name"],
                    exc,
                )
                run.handle = None
                run.restart_at = now + self.restart_delay
                run.waiting = {"reason": "CreateContainerError", "message": str(exc)}
                return False
            run.ip = run.handle.ip
        elif not run.ip:
            index = self._next_ip
            self._next_ip += 1
            run.ip = f"10.244.{index // 253}.{index % 253 + 2}"
        run.started = True
        run.started_at = now_rfc3339(self._clock)
        run.started_mono = now
        return True

    async def _handle_ready(self, pod: Obj, handle: PodHandle) -> bool:
        try:
            result = handle.ready()
            if inspect.isawaitable(result):
                return bool(await asyncio.wait_for(result, timeout=max(1.0, self.poll * 5)))
            return bool(result)
        except Exception as exc:
            log.debug("%s: readiness of %s: %s", self.name, meta(pod)["name"], exc)
            return False

    def _exited(
        self, store: Store, pods_t: ResourceType, pod: Obj, run: _Run, code: int, now: float
    ) -> float:
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        terminated = self._terminated(run, code)
        run.handle = None
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            status = self._status(pod, run, ready=False, terminated=terminated)
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            self._write(store, pods_t, pod, status)
            return self.poll
        log.info(
            "%s: pod %s/%s exited with %d; restarting",
            self.name,
            meta(pod)["namespace"],
            meta(pod)["name"],
            code,
        )
        run.restarts += 1
        run.last_state = {"terminated": terminated}
        run.restart_at = now + self.restart_delay
        run.waiting = {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {self.restart_delay}s restarting failed container",
        }
        self._write(store, pods_t, pod, self._status(pod, run, ready=False))
        return self.restart_delay

    def _terminated(self, run: _Run, code: int) -> Obj:
        return {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at,
            "finishedAt": now_rfc3339(self._clock),
            "containerID": _container_id(run),
        }

    async def _terminate(self, store: Store, pods_t: ResourceType, pod: Obj, run: _Run) -> None:
        """Graceful deletion: not ready at once, SIGTERM, the grace period, SIGKILL, terminal phase, gone."""
        m = meta(pod)
        namespace, name = m["namespace"], m["name"]
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if run.started and not finished:
            self._write(store, pods_t, pod, self._status(pod, run, ready=False))
        code = 0
        if run.handle is not None:
            handle = run.handle
            with contextlib.suppress(Exception):
                handle.terminate()
            grace = m.get("deletionGracePeriodSeconds")
            exited = await _wait_exit(handle, grace if isinstance(grace, int) else 30)
            if exited is None:
                with contextlib.suppress(Exception):
                    handle.kill()
                exited = await _wait_exit(handle, 2.0)
            code = _exit_code(exited) if exited is not None else 137
            run.handle = None
        else:
            await asyncio.sleep(self.terminate_delay)
        current = self._current(store, pods_t, namespace, name, run.uid)
        if current is None:
            return
        if run.started and not finished:
            status = self._status(current, run, ready=False, terminated=self._terminated(run, code))
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            self._write(store, pods_t, current, status)
        with contextlib.suppress(ApiError):
            store.delete(pods_t, namespace, name, DeleteOptions(grace_period=0, uid=run.uid))

    # --- status -------------------------------------------------------------------------------------------

    def _status(self, pod: Obj, run: _Run, ready: bool, terminated: Obj | None = None) -> Obj:
        status = copy.deepcopy(pod.get("status") or {})
        spec = pod.get("spec") or {}
        now = now_rfc3339(self._clock)
        running = run.started and terminated is None and run.waiting is None
        containers_ready = ready and running
        conditions = list(status.get("conditions") or [])
        for kind, value in (
            ("PodReadyToStartContainers", run.started),
            ("Initialized", True),
            ("Ready", containers_ready),
            ("ContainersReady", containers_ready),
            ("PodScheduled", True),
        ):
            entry: Obj = {
                "type": kind,
                "status": "True" if value else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            if kind in ("Ready", "ContainersReady") and not value:
                entry["reason"] = "PodCompleted" if terminated is not None else "ContainersNotReady"
                if terminated is None:
                    names = ", ".join(c.get("name", "") for c in spec.get("containers") or [])
                    entry["message"] = f"containers with unready status: [{names}]"
            conditions = with_condition(conditions, entry)
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conditions.sort(key=lambda c: order.index(c["type"]) if c.get("type") in order else len(order))
        status["conditions"] = conditions
        if run.started or terminated is not None:
            status["phase"] = "Running"
        status["hostIP"], status["hostIPs"] = run.host_ip, [{"ip": run.host_ip}]
        if run.ip:
            status["podIP"], status["podIPs"] = run.ip, [{"ip": run.ip}]
        status.setdefault("startTime", run.started_at or now)
        statuses = []
        for c in spec.get("containers") or []:
            state: Obj
            if terminated is not None:
                state = {"terminated": terminated}
            elif run.waiting is not None:
                state = {"waiting": run.waiting}
            else:
                state = {"running": {"startedAt": run.started_at}}
            image = c.get("image", "")
            statuses.append(
                {
                    "name": c.get("name", ""),
                    "state": state,
                    "lastState": run.last_state,
                    "ready": containers_ready,
                    "restartCount": run.restarts,
                    "image": image,
                    "imageID": f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
                    "containerID": _container_id(run),
                    "started": running,
                }
            )
        status["containerStatuses"] = statuses
        return status

    @staticmethod
    def _write(store: Store, pods_t: ResourceType, pod: Obj, status: Obj) -> None:
        if pod.get("status") == status:
            return
        m = meta(pod)
        try:
            store.replace(pods_t, m["namespace"], m["name"], {**pod, "status": status}, subresource="status")
        except ApiError as exc:
            log.debug("kubelet: status of pod %s/%s: %s", m["namespace"], m["name"], exc.message)

    # --- shutdown -----------------------------------------------------------------------------------------

    def _stop(self, run: _Run) -> None:
        handle, run.handle = run.handle, None
        if handle is None:
            return
        with contextlib.suppress(Exception):
            handle.terminate()
        asyncio.get_running_loop().call_later(2.0, _kill_if_running, handle)

    async def _shutdown(self) -> None:
        handles = [r.handle for r in self._runs.values() if r.handle is not None]
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.terminate()
        for handle in handles:
            await _wait_exit(handle, 2.0)
            _kill_if_running(handle)


def _kill_if_running(handle: PodHandle) -> None:
    with contextlib.suppress(Exception):
        if handle.exited() is None:
            handle.kill()


def _container_id(run: _Run) -> str:
    return "containerd://" + hashlib.sha256(f"{run.uid}/{run.restarts}".encode()).hexdigest()


__all__ = [
    "GPU",
    "Kubelet",
    "PodHandle",
    "Runtime",
    "Scheduler",
    "container_requests",
    "http_ready",
    "node",
    "parse_quantity",
    "parse_time",
    "pod_ready",
    "pod_requests",
    "readiness_url",
    "register_node",
]
