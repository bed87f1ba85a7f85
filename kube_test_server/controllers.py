"""The parts of kube-controller-manager an operator leans on: Deployments and EndpointSlices.

Each controller is a small class with ``name`` and ``async def run(store)``; the server starts the ones it
is given as tasks on its loop, so leaving one out switches it off. A controller wakes when the store
changes a kind it watches (its listener only sets an event: a listener runs inside the write, and writing
from there would nest writes), reconciles everything it owns, and also reconciles every ``resync``
seconds as a safety net. Every write goes through the Store's methods, so resourceVersion, generation,
validation, watch events and garbage collection apply to the controllers as to any HTTP client.

``DeploymentController`` (Deployment → ReplicaSet → Pods) and ``EndpointSliceController`` (Service →
EndpointSlice). What they do as the real ones do:

* ReplicaSets are named ``{deployment}-{pod-template-hash}``, the hash (10 characters of the real
  alphabet) taken from the pod template and ``status.collisionCount``; the label ``pod-template-hash`` is
  added to the ReplicaSet's selector, its template and so to its pods; ReplicaSets carry the
  ``deployment.kubernetes.io/revision``, ``desired-replicas`` and ``max-replicas`` annotations.
* RollingUpdate follows the real arithmetic (``maxSurge`` rounded up, ``maxUnavailable`` rounded down,
  old ReplicaSets scaled down only while availability stays at ``replicas - maxUnavailable``); Recreate
  scales the old ReplicaSets to zero and starts the new one once no old pod is left.
* Scale-down picks pods as ``controller.ActivePodsWithRanks`` orders them: unassigned, then Pending <
  Unknown < Running, not ready, lower ``controller.kubernetes.io/pod-deletion-cost``, more pods of the
  same Deployment on the node, ready for less time, more restarts, newer.
* Deployment status as ``calculateStatus`` (zero fields left out), with the ``Available`` and
  ``Progressing`` conditions and their real reasons, ``ProgressDeadlineExceeded`` included, and
  ``ReplicaFailure`` when pods cannot be created; ReplicaSet status with ``replicas``,
  ``fullyLabeledReplicas``, ``readyReplicas``, ``availableReplicas`` (``minReadySeconds`` honoured) and
  ``observedGeneration``. A paused Deployment is scaled but not rolled; old ReplicaSets beyond
  ``revisionHistoryLimit`` are deleted once empty.
* EndpointSlice endpoints list every pod with an IP that is not terminal, not-ready ones with
  ``ready: false``, terminating ones with ``ready: false, terminating: true``; ``serving`` is the pod's
  Ready condition.

Known simplifications (docs/kube-test-server.md lists them too):

* No adoption or release: pods and ReplicaSets are the controller's only through a controller
  ownerReference it wrote; a matching orphan is not adopted, a relabelled pod is not released.
* A scaling event during a rollout is not proportional: the new ReplicaSet grows within ``maxSurge``, the
  old ones shrink through the rolling-update rules. A paused Deployment with several active
  ReplicaSets is not scaled at all.
* Pods are created and deleted all at once, without the slow-start batches and expectations of the real
  ReplicaSet controller. The ``LogarithmicScaleDown`` buckets are not applied: ready time and creation
  time compare exactly (to the second), as with that feature gate off.
* The ``deployment.kubernetes.io/revision`` annotation is set on ReplicaSets only. The real controller
  also sets it on the Deployment through ``/status``; the store keeps metadata out of status writes, and
  a write to the main resource would bump the Deployment's generation.
* One EndpointSlice per Service, whatever the number of endpoints (the real one splits at 100) and
  whatever the pods' ports: a named ``targetPort`` is resolved against the first endpoint's pod, where the
  real controller makes one slice per distinct port mapping. No ``hostname``, ``zone`` or ``hints``.
* Loopback (127.0.0.0/8, ::1) and link-local pod IPs are left out of EndpointSlices, with a debug log.
  The real API server refuses such addresses with a 422 (so does the store), and the real controller
  then fails the whole slice and retries forever; leaving them out keeps the slice useful for the other
  pods when local processes play the pods on loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

from kube_test_server.errors import ApiError
from kube_test_server.resources import ResourceType
from kube_test_server.store import Change, DeleteOptions, Obj, Store, meta, now_rfc3339

log = logging.getLogger(__name__)

POD_TEMPLATE_HASH = "pod-template-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"

# Annotations the real controller never copies from a Deployment to its ReplicaSets.
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's: no vowels, no look-alikes
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


# --- shared helpers (kubelet.py uses them too) ---------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp as the store writes it, in seconds since the epoch; None when absent or odd."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def condition(obj: Obj, kind: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return None


def pod_ready(pod: Obj) -> bool:
    found = condition(pod, "Ready")
    return found is not None and found.get("status") == "True"


def pod_active(pod: Obj) -> bool:
    """``controller.IsPodActive``: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not meta(pod).get("deletionTimestamp")


def controller_uid(obj: Obj) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    m = meta(owner)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_condition(conditions: list[Obj], new: Obj) -> list[Obj]:
    """``conditions`` with ``new`` in place of its type; lastTransitionTime moves only with the status."""
    out: list[Obj] = []
    placed = False
    for c in conditions:
        if c.get("type") != new.get("type"):
            out.append(c)
            continue
        merged = dict(new)
        if c.get("status") == new.get("status"):
            merged["lastTransitionTime"] = c.get("lastTransitionTime", new.get("lastTransitionTime"))
        out.append(merged)
        placed = True
    if not placed:
        out.append(new)
    return out


class Reconciler:
    """A controller loop: wake on a change to a watched kind, else every ``resync`` seconds."""

    name: str = "reconciler"
    watches: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    # Between two rounds, however busy the store: a controller whose writes always wake it again must not
    # starve the API server sharing its loop.
    min_interval: float = 0.005

    def __init__(self, resync: float = 0.5) -> None:
        self.resync = resync

    def reconcile(self, store: Store) -> None:
        raise NotImplementedError

    def notice(self, change: Change) -> None:
        """Called inside the store's write for each change to a watched kind: set events here, never write."""

    async def run(self, store: Store) -> None:
        wake = asyncio.Event()

        def listener(change: Change) -> None:
            if (change.group, change.plural) in self.watches:
                wake.set()
                self.notice(change)

        store.listeners.append(listener)
        try:
            while True:
                wake.clear()
                with self.guard("reconcile"):
                    self.reconcile(store)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.resync)
                await asyncio.sleep(self.min_interval)
        finally:
            with contextlib.suppress(ValueError):
                store.listeners.remove(listener)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """One object's failure is logged and retried next round, as a real controller requeues it."""
        try:
            yield
        except ApiError as exc:
            log.debug("%s: %s: %s (retrying)", self.name, what, exc.message)
        except Exception:
            log.exception("%s: %s failed (retrying)", self.name, what)


def _fresh(store: Store, rtype: ResourceType, namespace: str | None, name: str) -> Obj | None:
    try:
        return store.get(rtype, namespace, name)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


def _now(store: Store) -> str:
    return now_rfc3339(store.clock)


# --- Deployments and ReplicaSets -----------------------------------------------------------------------


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """A stable 10-character hash of a pod template, in the alphabet the real ``pod-template-hash`` uses.

    FNV-1a 32 as the real ``ComputeHash``, over canonical JSON rather than Go's object dump, so the value
    differs from a cluster's but stays the same from run to run for the same template.
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += collision_count.to_bytes(4, "little", signed=False)
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in f"{h:010d}")


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = float(value[:-1]) * total / 100
        except ValueError:
            return 0
        return math.ceil(share) if round_up else math.floor(share)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _replicas(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _status_int(obj: Obj, field: str) -> int:
    value = (obj.get("status") or {}).get(field)
    return value if isinstance(value, int) else 0


def _rolling(d: Obj) -> bool:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    return bool(strategy.get("type", "RollingUpdate") == "RollingUpdate")


def _fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as ``deploymentutil.ResolveFenceposts``."""
    replicas = _replicas(d)
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the real one's way out of a rollout that could never move
    return surge, unavailable


def _max_unavailable(d: Obj) -> int:
    replicas = _replicas(d)
    if not _rolling(d) or replicas == 0:
        return 0
    return min(_fenceposts(d)[1], replicas)


def _max_surge(d: Obj) -> int:
    return _fenceposts(d)[0] if _rolling(d) else 0


def _without_hash(template: Any) -> Any:
    out = copy.deepcopy(template)
    labels = ((out or {}).get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return out


def _revision(rs: Obj) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _by_creation(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (meta(o).get("creationTimestamp") or "", meta(o).get("name") or ""))


def _pod_rank_key(pod: Obj, rank: int) -> tuple[Any, ...]:
    """Sort key putting the pod to delete first, as ``controller.ActivePodsWithRanks.Less``."""
    spec, status, m = pod.get("spec") or {}, pod.get("status") or {}, meta(pod)
    ready = pod_ready(pod)
    try:
        cost = int((m.get("annotations") or {}).get(DELETION_COST, "0"))
    except ValueError:
        cost = 0  # the real helper's error is ignored there too: an unreadable cost counts as 0
    ready_cond = condition(pod, "Ready")
    ready_since = parse_time(ready_cond.get("lastTransitionTime")) if ready and ready_cond else None
    restarts = max(
        (int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []), default=0
    )
    created = parse_time(m.get("creationTimestamp"))
    return (
        bool(spec.get("nodeName")),
        _PHASE_ORDINAL.get(status.get("phase", ""), 3),
        ready,
        cost,
        -rank,
        # afterOrZero: a missing time first, then the later one first.
        (ready_since is not None, -(ready_since or 0.0)) if ready else (False, 0.0),
        -restarts,
        (created is not None, -(created or 0.0)),
    )


def pods_to_delete(pods: list[Obj], count: int, related: list[Obj] | None = None) -> list[Obj]:
    """The ``count`` pods a ReplicaSet scale-down deletes, as ``getPodsToDelete``.

    ``related`` are the active pods of the whole Deployment: a pod on a node with more of them goes first.
    """
    if count <= 0:
        return []
    if count >= len(pods):
        return list(pods)
    per_node: dict[str, int] = {}
    for p in related if related is not None else pods:
        node = (p.get("spec") or {}).get("nodeName") or ""
        if node and pod_active(p):
            per_node[node] = per_node.get(node, 0) + 1
    ranked = sorted(
        pods, key=lambda p: _pod_rank_key(p, per_node.get((p.get("spec") or {}).get("nodeName") or "", 0))
    )
    return ranked[:count]


class DeploymentController(Reconciler):
    """Deployments → ReplicaSets → Pods, with status on both (see the module docstring)."""

    name = "deployment-controller"
    watches = frozenset({("apps", "deployments"), ("apps", "replicasets"), ("", "pods")})

    def reconcile(self, store: Store) -> None:
        deployments = store.type("apps", "v1", "deployments")
        replicasets = store.type("apps", "v1", "replicasets")
        pods = store.type("", "v1", "pods")
        for d in store.items(deployments):
            m = meta(d)
            with self.guard(f"deployment {m['namespace']}/{m['name']}"):
                self._rollout(store, deployments, replicasets, pods, m["namespace"], m["name"])
        for rs in store.items(replicasets):
            m = meta(rs)
            with self.guard(f"replicaset {m['namespace']}/{m['name']}"):
                self._sync_replicaset(store, replicasets, pods, m["namespace"], m["name"])
        for d in store.items(deployments):
            m = meta(d)
            with self.guard(f"deployment status {m['namespace']}/{m['name']}"):
                self._sync_status(store, deployments, replicasets, m["namespace"], m["name"])

    # --- rollout --------------------------------------------------------------------------------------

    @staticmethod
    def _owned(store: Store, rtype: ResourceType, namespace: str, uid: str) -> list[Obj]:
        """The objects ``uid`` controls, as stored: read them, copy before changing one."""
        return [o for o in store.items(rtype, namespace) if controller_uid(o) == uid]

    @staticmethod
    def _split(d: Obj, rses: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        template = (d.get("spec") or {}).get("template")
        new = None
        for rs in _by_creation(rses):
            if new is None and _without_hash((rs.get("spec") or {}).get("template")) == _without_hash(
                template
            ):
                new = rs
        return new, [rs for rs in rses if rs is not new]

    def _rollout(
        self,
        store: Store,
        deployments: ResourceType,
        replicasets: ResourceType,
        pods: ResourceType,
        namespace: str,
        name: str,
    ) -> None:
        d = _fresh(store, deployments, namespace, name)
        if d is None or meta(d).get("deletionTimestamp"):
            return
        rses = self._owned(store, replicasets, namespace, meta(d)["uid"])
        new, old = self._split(d, rses)
        if (d.get("spec") or {}).get("paused"):
            self._scale_paused(store, replicasets, d, new, old)
            return
        if not _rolling(d):
            self._recreate(store, replicasets, pods, d, new, old)
            return
        if new is None:
            target = self._new_replicas(d, rses, 0)
            new = self._create_replicaset(store, deployments, replicasets, d, old, target)
            if new is None:
                return
        else:
            new, changed = self._sync_new_metadata(d, new, old)
            if changed:
                new = store.replace(replicasets, namespace, meta(new)["name"], new)
        # reconcileNewReplicaSet
        if _replicas(new) > _replicas(d):
            new = self._scale(store, replicasets, d, new, _replicas(d))
        elif _replicas(new) < _replicas(d):
            new = self._scale(store, replicasets, d, new, self._new_replicas(d, [new, *old], _replicas(new)))
        self._scale_down_old(store, replicasets, d, new, old)
        self._cleanup(store, replicasets, d, old)

    @staticmethod
    def _new_replicas(d: Obj, all_rs: list[Obj], current: int) -> int:
        """``NewRSNewReplicas`` for RollingUpdate: grow within replicas + maxSurge pods in all."""
        wanted = _replicas(d)
        max_total = wanted + _max_surge(d)
        pods_now = sum(_replicas(rs) for rs in all_rs)
        if pods_now >= max_total:
            return current
        return current + max(0, min(max_total - pods_now, wanted - current))

    def _scale_down_old(
        self, store: Store, replicasets: ResourceType, d: Obj, new: Obj, old: list[Obj]
    ) -> None:
        """``reconcileOldReplicaSets``: unhealthy old pods first, then healthy ones within maxUnavailable."""
        if sum(_replicas(rs) for rs in old) == 0:
            return
        all_pods = sum(_replicas(rs) for rs in [new, *old])
        min_available = _replicas(d) - _max_unavailable(d)
        new_unavailable = _replicas(new) - _status_int(new, "availableReplicas")
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        old = _by_creation(old)
        done = 0
        for i, rs in enumerate(old):
            if done >= budget:
                break
            unhealthy = _replicas(rs) - _status_int(rs, "availableReplicas")
            if _replicas(rs) == 0 or unhealthy <= 0:
                continue
            step = min(budget - done, unhealthy)
            old[i] = self._scale(store, replicasets, d, rs, _replicas(rs) - step)
            done += step
        available = sum(_status_int(rs, "availableReplicas") for rs in [new, *old])
        if available <= min_available:
            return
        total = available - min_available
        done = 0
        for rs in old:
            if done >= total:
                break
            if _replicas(rs) == 0:
                continue
            step = min(_replicas(rs), total - done)
            self._scale(store, replicasets, d, rs, _replicas(rs) - step)
            done += step

    def _recreate(
        self,
        store: Store,
        replicasets: ResourceType,
        pods: ResourceType,
        d: Obj,
        new: Obj | None,
        old: list[Obj],
    ) -> None:
        namespace = meta(d)["namespace"]
        for rs in old:
            if _replicas(rs) != 0:
                self._scale(store, replicasets, d, rs, 0)
        old_uids = {meta(rs)["uid"] for rs in old}
        for pod in store.items(pods, namespace):
            phase = (pod.get("status") or {}).get("phase")
            if controller_uid(pod) in old_uids and phase not in ("Succeeded", "Failed"):
                return  # Recreate: the new pods start once every old one is gone
        if new is None:
            deployments = store.type("apps", "v1", "deployments")
            new = self._create_replicaset(store, deployments, replicasets, d, old, _replicas(d))
        else:
            new, changed = self._sync_new_metadata(d, new, old)
            if changed or _replicas(new) != _replicas(d):
                self._scale(store, replicasets, d, new, _replicas(d))

    def _scale_paused(
        self, store: Store, replicasets: ResourceType, d: Obj, new: Obj | None, old: list[Obj]
    ) -> None:
        """``FindActiveOrLatest``: a paused Deployment still scales its one active ReplicaSet."""
        active = [rs for rs in [*([new] if new else []), *old] if _replicas(rs) > 0]
        if len(active) > 1:
            return
        target = active[0] if active else new or (max(old, key=_revision) if old else None)
        if target is not None and _replicas(target) != _replicas(d):
            self._scale(store, replicasets, d, target, _replicas(d))

    def _annotations(self, d: Obj, rs: Obj, revision: int | None) -> Obj:
        annotations = dict(meta(rs).get("annotations") or {})
        for k, v in (meta(d).get("annotations") or {}).items():
            if k not in _NOT_COPIED:
                annotations[k] = v
        if revision is not None and _revision(rs) < revision:
            annotations[REVISION] = str(revision)
        annotations[DESIRED_REPLICAS] = str(_replicas(d))
        annotations[MAX_REPLICAS] = str(_replicas(d) + _max_surge(d))
        return annotations

    def _sync_new_metadata(self, d: Obj, new: Obj, old: list[Obj]) -> tuple[Obj, bool]:
        """A copy of the new ReplicaSet with its annotations and minReadySeconds in line, and whether
        something moved."""
        revision = max((_revision(rs) for rs in old), default=0) + 1
        annotations = self._annotations(d, new, revision)
        min_ready = (d.get("spec") or {}).get("minReadySeconds", 0)
        changed = (
            annotations != (meta(new).get("annotations") or {})
            or (new.get("spec") or {}).get("minReadySeconds", 0) != min_ready
        )
        new = copy.deepcopy(new)
        meta(new)["annotations"] = annotations
        new.setdefault("spec", {})["minReadySeconds"] = min_ready
        return new, changed

    def _scale(self, store: Store, replicasets: ResourceType, d: Obj, rs: Obj, replicas: int) -> Obj:
        rs = copy.deepcopy(rs)
        rs.setdefault("spec", {})["replicas"] = replicas
        meta(rs)["annotations"] = {
            **(meta(rs).get("annotations") or {}),
            DESIRED_REPLICAS: str(_replicas(d)),
            MAX_REPLICAS: str(_replicas(d) + _max_surge(d)),
        }
        return store.replace(replicasets, meta(rs)["namespace"], meta(rs)["name"], rs)

    def _create_replicaset(
        self,
        store: Store,
        deployments: ResourceType,
        replicasets: ResourceType,
        d: Obj,
        old: list[Obj],
        replicas: int,
    ) -> Obj | None:
        m, spec = meta(d), d.get("spec") or {}
        collisions = (d.get("status") or {}).get("collisionCount")
        digest = template_hash(spec.get("template") or {}, collisions)
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = digest
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = digest
        name = f"{m['name']}-{digest}"
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": m["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(d, "apps/v1", "Deployment")],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        meta(rs)["annotations"] = self._annotations(d, rs, max((_revision(o) for o in old), default=0) + 1)
        try:
            created = store.create(replicasets, m["namespace"], rs)
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
            # Someone else's ReplicaSet holds the name: a new hash next round, as the real collisionCount.
            current = _fresh(store, deployments, m["namespace"], m["name"])
            if current is not None:
                status = dict(current.get("status") or {})
                status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
                store.replace(
                    deployments,
                    m["namespace"],
                    m["name"],
                    {**current, "status": status},
                    subresource="status",
                )
            return None
        self._set_progressing(
            store, deployments, d, "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'
        )
        return created

    def _set_progressing(
        self, store: Store, deployments: ResourceType, d: Obj, status: str, reason: str, message: str
    ) -> None:
        current = _fresh(store, deployments, meta(d)["namespace"], meta(d)["name"])
        if current is None:
            return
        now = _now(store)
        new = {
            "type": "Progressing",
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
        st = dict(current.get("status") or {})
        st["conditions"] = with_condition(list(st.get("conditions") or []), new)
        store.replace(
            deployments,
            meta(d)["namespace"],
            meta(d)["name"],
            {**current, "status": st},
            subresource="status",
        )

    def _cleanup(self, store: Store, replicasets: ResourceType, d: Obj, old: list[Obj]) -> None:
        """Empty old ReplicaSets beyond ``revisionHistoryLimit`` go, the oldest revision first."""
        limit = (d.get("spec") or {}).get("revisionHistoryLimit", 10)
        if not isinstance(limit, int):
            return
        cleanable = [
            rs
            for rs in old
            if _replicas(rs) == 0
            and _status_int(rs, "replicas") == 0
            and not meta(rs).get("deletionTimestamp")
            and int(meta(rs).get("generation") or 0) <= _status_int(rs, "observedGeneration")
        ]
        for rs in sorted(cleanable, key=_revision)[: max(0, len(cleanable) - limit)]:
            store.delete(
                replicasets, meta(rs)["namespace"], meta(rs)["name"], DeleteOptions(uid=meta(rs)["uid"])
            )

    # --- ReplicaSets ------------------------------------------------------------------------------------

    def _sync_replicaset(
        self, store: Store, replicasets: ResourceType, pods: ResourceType, namespace: str, name: str
    ) -> None:
        rs = _fresh(store, replicasets, namespace, name)
        if rs is None:
            return
        m, spec = meta(rs), rs.get("spec") or {}
        owned = self._owned(store, pods, namespace, m["uid"])
        active = [p for p in owned if pod_active(p)]
        diff = len(active) - _replicas(rs)
        failure: str | None = None
        if not m.get("deletionTimestamp"):
            if diff < 0:
                for _ in range(-diff):
                    try:
                        store.create(pods, namespace, self._pod_for(rs))
                    except ApiError as exc:
                        failure = exc.message  # retried next round; the condition says why meanwhile
                        break
            elif diff > 0:
                for pod in pods_to_delete(active, diff, self._related_pods(store, replicasets, pods, rs)):
                    pm = meta(pod)
                    with contextlib.suppress(ApiError):
                        store.delete(pods, namespace, pm["name"], DeleteOptions(uid=pm["uid"]))
            owned = self._owned(store, pods, namespace, m["uid"])
            active = [p for p in owned if pod_active(p)]
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = store.clock()
        ready = [p for p in active if pod_ready(p)]
        available = [p for p in ready if _available(p, min_ready, now)]
        labelled = [
            p
            for p in active
            if all((meta(p).get("labels") or {}).get(k) == v for k, v in template_labels.items())
        ]
        status: Obj = {"replicas": len(active)}
        for field, value in (
            ("fullyLabeledReplicas", len(labelled)),
            ("readyReplicas", len(ready)),
            ("availableReplicas", len(available)),
            ("observedGeneration", int(m.get("generation") or 0)),
        ):
            if value:
                status[field] = value
        conditions = [
            c for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") != "ReplicaFailure"
        ]
        held = condition(rs, "ReplicaFailure")
        if failure is not None:
            # The first message stays: a generated pod name in it would otherwise rewrite it every round.
            conditions.append(
                held
                or {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "lastTransitionTime": _now(store),
                    "reason": "FailedCreate",
                    "message": failure,
                }
            )
        if conditions:
            status["conditions"] = conditions
        if rs.get("status") != status:
            store.replace(replicasets, namespace, name, {**rs, "status": status}, subresource="status")

    @staticmethod
    def _pod_for(rs: Obj) -> Obj:
        m = meta(rs)
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        tm = template.get("metadata") or {}
        pod_meta: Obj = {
            "generateName": f"{m['name']}-",
            "namespace": m["namespace"],
            "ownerReferences": [owner_reference(rs, "apps/v1", "ReplicaSet")],
        }
        for key in ("labels", "annotations", "finalizers"):
            if tm.get(key):
                pod_meta[key] = tm[key]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}

    @staticmethod
    def _related_pods(store: Store, replicasets: ResourceType, pods: ResourceType, rs: Obj) -> list[Obj]:
        """The active pods of every ReplicaSet with the same controller (the rank's 'doubled up' count)."""
        owner = controller_uid(rs)
        namespace = meta(rs)["namespace"]
        siblings = {
            meta(o)["uid"]
            for o in store.items(replicasets, namespace)
            if owner is not None and controller_uid(o) == owner
        } | {meta(rs)["uid"]}
        return [p for p in store.items(pods, namespace) if controller_uid(p) in siblings and pod_active(p)]

    # --- Deployment status ------------------------------------------------------------------------------

    def _sync_status(
        self,
        store: Store,
        deployments: ResourceType,
        replicasets: ResourceType,
        namespace: str,
        name: str,
    ) -> None:
        d = _fresh(store, deployments, namespace, name)
        if d is None:
            return
        rses = self._owned(store, replicasets, namespace, meta(d)["uid"])
        new, _ = self._split(d, rses)
        old_status = d.get("status") or {}
        wanted = _replicas(d)
        available = sum(_status_int(rs, "availableReplicas") for rs in rses)
        counts = {
            "observedGeneration": int(meta(d).get("generation") or 0),
            "replicas": sum(_status_int(rs, "replicas") for rs in rses),
            "updatedReplicas": _status_int(new, "replicas") if new else 0,
            "readyReplicas": sum(_status_int(rs, "readyReplicas") for rs in rses),
            "availableReplicas": available,
            "unavailableReplicas": max(0, sum(_replicas(rs) for rs in rses) - available),
            "collisionCount": int(old_status.get("collisionCount") or 0),
        }
        status: Obj = {k: v for k, v in counts.items() if v}
        now = _now(store)
        conditions = list(old_status.get("conditions") or [])
        if available >= wanted - _max_unavailable(d):
            avail = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        conditions = self._set_condition(conditions, "Available", *avail, now)
        progressing = self._progressing(d, new, status, old_status, now)
        if progressing is not None:
            cond_status, reason, message = progressing
            # Progress made moves lastUpdateTime even when the reason stays ReplicaSetUpdated.
            force = reason == "ReplicaSetUpdated"
            conditions = self._set_condition(
                conditions, "Progressing", cond_status, reason, message, now, force
            )
        # getReplicaFailures: the new ReplicaSet's failure first, then any other's.
        failed = [
            condition(rs, "ReplicaFailure")
            for rs in ([new] if new else []) + [r for r in rses if r is not new]
        ]
        failure = next((f for f in failed if f and f.get("status") == "True"), None)
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        if failure is not None:
            conditions = self._set_condition(
                conditions,
                "ReplicaFailure",
                "True",
                failure.get("reason", ""),
                failure.get("message", ""),
                now,
            )
        order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c.get("type", ""), 2))
        if old_status != status:
            store.replace(deployments, namespace, name, {**d, "status": status}, subresource="status")

    @staticmethod
    def _set_condition(
        conditions: list[Obj],
        kind: str,
        status: str,
        reason: str,
        message: str,
        now: str,
        force: bool = False,
    ) -> list[Obj]:
        """``SetDeploymentCondition``: same status and reason keeps the old condition untouched, unless
        ``force`` (progress made: the real controller then moves lastUpdateTime, not lastTransitionTime)."""
        current = next((c for c in conditions if c.get("type") == kind), None)
        same = current is not None and current.get("status") == status and current.get("reason") == reason
        if same and (
            not force
            or ((current or {}).get("message"), (current or {}).get("lastUpdateTime")) == (message, now)
        ):
            return conditions
        new = {
            "type": kind,
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
        return with_condition(conditions, new)

    def _progressing(
        self, d: Obj, new: Obj | None, status: Obj, old_status: Obj, now: str
    ) -> tuple[str, str, str] | None:
        """The Progressing condition ``syncRolloutStatus`` would write, or None to keep the current one."""
        current = condition(d, "Progressing")
        reason = (current or {}).get("reason")
        if (d.get("spec") or {}).get("paused"):
            return ("Unknown", "DeploymentPaused", "Deployment is paused")
        if reason == "DeploymentPaused":
            return ("Unknown", "DeploymentResumed", "Deployment is resumed")
        wanted = _replicas(d)
        rs_name = meta(new)["name"] if new else ""
        subject = f'ReplicaSet "{rs_name}"' if new else f'Deployment "{meta(d)["name"]}"'
        complete = (
            status.get("updatedReplicas", 0) == wanted
            and status.get("replicas", 0) == wanted
            and status.get("availableReplicas", 0) == wanted
        )
        if complete:
            if (
                reason == "NewReplicaSetAvailable"
                and current
                and current.get("message", "").startswith(subject)
            ):
                return None
            return ("True", "NewReplicaSetAvailable", f"{subject} has successfully progressed.")

        def old_pods(s: Obj) -> int:
            return int(s.get("replicas") or 0) - int(s.get("updatedReplicas") or 0)

        progress = (
            status.get("updatedReplicas", 0) > int(old_status.get("updatedReplicas") or 0)
            or old_pods(status) < old_pods(old_status)
            or status.get("readyReplicas", 0) > int(old_status.get("readyReplicas") or 0)
            or status.get("availableReplicas", 0) > int(old_status.get("availableReplicas") or 0)
        )
        if progress:
            return ("True", "ReplicaSetUpdated", f"{subject} is progressing.")
        if current is None and new is not None:
            return ("True", "FoundNewReplicaSet", f'Found new replica set "{rs_name}"')
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        last = parse_time((current or {}).get("lastUpdateTime"))
        if (
            isinstance(deadline, int)
            and current is not None
            and reason != "ProgressDeadlineExceeded"
            and last is not None
            and (parse_time(now) or 0) > last + deadline
        ):
            return ("False", "ProgressDeadlineExceeded", f"{subject} has timed out progressing.")
        return None


def _available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """``podutil.IsPodAvailable``: ready for at least minReadySeconds."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + min_ready_seconds <= now


# --- EndpointSlices ------------------------------------------------------------------------------------


def _resolve_port(pod: Obj, target: Any, protocol: str) -> int | None:
    """``podutil.FindPort``: a number as is, a name looked up in the pod's container ports."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                value = port.get("containerPort")
                return value if isinstance(value, int) else None
    return None


def _routable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True  # not ours to judge: the store's validation answers for it
    return not (ip.is_loopback or ip.is_link_local)


class EndpointSliceController(Reconciler):
    """One EndpointSlice per Service with a selector (see the module docstring)."""

    name = "endpointslice-controller"
    watches = frozenset({("", "services"), ("", "pods"), ("discovery.k8s.io", "endpointslices")})

    def __init__(self, resync: float = 0.5) -> None:
        super().__init__(resync)
        self._skipped: set[tuple[str, str]] = set()  # (pod uid, address): logged once, not every round

    def reconcile(self, store: Store) -> None:
        services = store.type("", "v1", "services")
        slices = store.type("discovery.k8s.io", "v1", "endpointslices")
        pods = store.type("", "v1", "pods")
        for svc in store.items(services):
            m = meta(svc)
            with self.guard(f"service {m['namespace']}/{m['name']}"):
                self._sync(store, services, slices, pods, m["namespace"], m["name"])
        service_uids = {meta(s)["uid"] for s in store.items(services)}
        for es in store.items(slices):
            m = meta(es)
            if (m.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY or m.get("deletionTimestamp"):
                continue
            if controller_uid(es) not in service_uids:
                with self.guard(f"endpointslice {m['namespace']}/{m['name']}"):
                    store.delete(slices, m["namespace"], m["name"], DeleteOptions(uid=m["uid"]))
        live = {meta(p)["uid"] for p in store.items(pods)}
        self._skipped = {entry for entry in self._skipped if entry[0] in live}

    def _sync(
        self,
        store: Store,
        services: ResourceType,
        slices: ResourceType,
        pods: ResourceType,
        namespace: str,
        name: str,
    ) -> None:
        svc = _fresh(store, services, namespace, name)
        if svc is None or meta(svc).get("deletionTimestamp"):
            return
        spec = svc.get("spec") or {}
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not selector or spec.get("type") == "ExternalName":
            return  # a Service without a selector has its EndpointSlices written by someone else
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        matched = sorted(
            (
                p
                for p in store.items(pods, namespace)
                if all((meta(p).get("labels") or {}).get(k) == v for k, v in selector.items())
            ),
            key=lambda p: meta(p)["name"],
        )
        endpoints: list[Obj] = []
        first: Obj | None = None
        for pod in matched:
            status = pod.get("status") or {}
            ip = status.get("podIP")
            if not ip or status.get("phase") in ("Succeeded", "Failed"):
                continue
            pm = meta(pod)
            if not _routable(ip):
                if (pm["uid"], ip) not in self._skipped:
                    self._skipped.add((pm["uid"], ip))
                    log.debug(
                        "%s: pod %s/%s: %s is not allowed in an EndpointSlice; left out of %s",
                        self.name,
                        namespace,
                        pm["name"],
                        ip,
                        name,
                    )
                continue
            first = first or pod
            serving = pod_ready(pod)
            terminating = bool(pm.get("deletionTimestamp"))
            ready = publish_not_ready or (serving and not terminating)
            endpoint: Obj = {
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pm["name"], "uid": pm["uid"]},
            }
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                endpoint["nodeName"] = node
            endpoints.append(endpoint)
        ports: list[Obj] = []
        if first is not None:
            for sp in spec.get("ports") or []:
                protocol = sp.get("protocol", "TCP")
                number = _resolve_port(first, sp.get("targetPort", sp.get("port")), protocol)
                if number is None:
                    continue
                port: Obj = {"name": sp.get("name", ""), "port": number, "protocol": protocol}
                if sp.get("appProtocol"):
                    port["appProtocol"] = sp["appProtocol"]
                ports.append(port)
        labels = {**(meta(svc).get("labels") or {}), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
        labels.pop("service.kubernetes.io/headless", None)
        if spec.get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        desired: Obj = {
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        uid = meta(svc)["uid"]
        mine = _by_creation(
            [
                copy.deepcopy(es)
                for es in store.items(slices, namespace)
                if controller_uid(es) == uid
                and (meta(es).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
            ]
        )
        if not mine:
            store.create(
                slices,
                namespace,
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "generateName": f"{name}-",
                        "namespace": namespace,
                        "labels": labels,
                        "ownerReferences": [owner_reference(svc, "v1", "Service")],
                    },
                    **desired,
                },
            )
            return
        current, extra = mine[0], mine[1:]
        for es in extra:
            store.delete(slices, namespace, meta(es)["name"], DeleteOptions(uid=meta(es)["uid"]))
        cm = meta(current)
        same = (
            all(current.get(k) == v for k, v in desired.items())
            and cm.get("labels") == labels
            and cm.get("ownerReferences") == [owner_reference(svc, "v1", "Service")]
        )
        if not same:
            cm["labels"] = labels
            cm["ownerReferences"] = [owner_reference(svc, "v1", "Service")]
            store.replace(slices, namespace, cm["name"], {**current, **desired})
