"""The object store: what the API server does between the HTTP request and etcd.

Every write goes through one place here, so the rules hold for HTTP clients and for the built-in
controllers alike: a global ``resourceVersion``, ``uid`` and ``creationTimestamp``, ``generation``
moved by spec changes only, status written only through ``/status`` where a kind has that
subresource, preconditions answered with 409, finalizers holding a deletion, ownerReference cascade,
namespaces that must exist, and a change history that watches replay from.

The store is single-threaded on purpose: the server runs it on one event loop, so a watch can read
the history and subscribe in one step without a gap.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from kube_test_server import admission
from kube_test_server.errors import ApiError, Cause
from kube_test_server.paths import get_path, set_path
from kube_test_server.resources import Registry, ResourceType

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
Match = Callable[[Obj], bool]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real server's: no vowels, no look-alikes


@dataclass(frozen=True)
class Change:
    """One write, as watches see it. ``old`` is the object before (None for ADDED)."""

    type: ChangeType
    resource_version: int
    group: str
    plural: str
    namespace: str
    obj: Obj
    old: Obj | None = None


@dataclass
class DeleteOptions:
    propagation: str = "Background"  # Background | Foreground | Orphan
    grace_period: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _namespace_mismatch() -> ApiError:
    return ApiError.bad_request(
        "the namespace of the provided object does not match the namespace sent on the request"
    )


def meta(obj: Obj) -> Obj:
    m = obj.setdefault("metadata", {})
    assert isinstance(m, dict)
    return m


@dataclass
class Store:
    registry: Registry = field(default_factory=Registry)
    clock: Callable[[], float] = time.time
    history_size: int = 10_000
    # Set when something plays the kubelet: pods on a node then terminate gracefully, as on a cluster.
    graceful_pods: bool = False
    objects: dict[Key, Obj] = field(default_factory=dict)
    revision: int = 1
    history: deque[Change] = field(default_factory=deque)
    # Changes at or below this version are gone from the history: watching from them is 410 Expired.
    compacted: int = 1
    listeners: list[Callable[[Change], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Its own source: a test that reseeds the global one (hypothesis does) must not repeat names.
        self._names = random.Random()
        # The keys of each kind: a list or a controller's scan reads its kind, not the whole store.
        self._kinds: dict[tuple[str, str], set[Key]] = {}
        for name in SYSTEM_NAMESPACES:
            self.create(self.type("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    # --- lookups ------------------------------------------------------------------------------------

    def type(self, group: str, version: str, plural: str) -> ResourceType:
        found = self.registry.find(group, version, plural)
        if found is None:
            raise ApiError.not_found(plural, "", group)
        return found

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.group, rtype.plural, namespace or "" if rtype.namespaced else "", name)

    def _out(self, rtype: ResourceType, obj: Obj) -> Obj:
        """A copy as the client asked for it: the CRD versions share one stored object."""
        out = copy.deepcopy(obj)
        out["apiVersion"] = rtype.api_version
        out["kind"] = rtype.kind
        return out

    def _stored(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple[Key, Obj]:
        """The key and the stored object, or 404."""
        key = self._key(rtype, namespace, name)
        found = self.objects.get(key)
        if found is None:
            raise ApiError.not_found(rtype.plural, name, rtype.group)
        return key, found

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        return self._out(rtype, self._stored(rtype, namespace, name)[1])

    def items(self, rtype: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Stored objects of a kind by namespace and name, as a list taken now (so callers may write while
        they go through it); not copies: callers inside the server must not change them."""
        keys = self._kinds.get((rtype.group, rtype.plural), ())
        return [self.objects[k] for k in sorted(keys) if namespace is None or k[2] == namespace]

    def list_objects(
        self, rtype: ResourceType, namespace: str | None = None, match: Match | None = None
    ) -> list[Obj]:
        """Read-only views for serializing (stored objects are replaced on write, never changed in place)."""
        view = {"apiVersion": rtype.api_version, "kind": rtype.kind}
        return [{**o, **view} for o in self.items(rtype, namespace) if match is None or match(o)]

    def find_uid(self, uid: str) -> Obj | None:
        for obj in self.objects.values():
            if meta(obj).get("uid") == uid:
                return obj
        return None

    # --- writes -------------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.revision += 1
        return self.revision

    def _emit(self, change: Change) -> None:
        self.history.append(change)
        while len(self.history) > self.history_size:
            self.compacted = self.history.popleft().resource_version
        for listener in list(self.listeners):
            listener(change)

    def _put(self, rtype: ResourceType, key: Key, new: Obj, old: Obj | None) -> None:
        """Store a new version. Stored objects are replaced, never changed in place, so watches and list
        views can hold them without copies."""
        meta(new)["resourceVersion"] = str(self._bump())
        self.objects[key] = new
        self._kinds.setdefault(key[:2], set()).add(key)
        kind: ChangeType = "ADDED" if old is None else "MODIFIED"
        self._emit(Change(kind, self.revision, rtype.group, rtype.plural, key[2], new, old))

    def compact(self) -> None:
        """Forget the whole history, as etcd compaction does: older watches get 410 Expired."""
        self.history.clear()
        self.compacted = self.revision

    def _check_namespace(self, rtype: ResourceType, namespace: str | None) -> None:
        if not rtype.namespaced:
            return
        if not namespace:
            raise _namespace_mismatch()
        ns = self.objects.get(("", "namespaces", "", namespace))
        if ns is None:
            raise ApiError.not_found("namespaces", namespace)
        if meta(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{rtype.plural} is forbidden: unable to create new content in namespace {namespace} because "
                "it is being terminated",
            )

    def create(self, rtype: ResourceType, namespace: str | None, body: Obj, dry_run: bool = False) -> Obj:
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise ApiError.bad_request("the body of the request is not a JSON object")
        m = meta(obj)
        if rtype.namespaced:
            body_ns = m.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise _namespace_mismatch()
            namespace = namespace or body_ns
            m["namespace"] = namespace
        else:
            m.pop("namespace", None)
        if not m.get("name") and m.get("generateName"):
            suffix = "".join(self._names.choice(_GENERATE_ALPHABET) for _ in range(5))
            m["name"] = f"{m['generateName']}{suffix}"
        name = m.get("name") or ""
        self._check_namespace(rtype, namespace)
        key = self._key(rtype, namespace, name)
        # Status is the server's to set on create, except a Node's: registration writes it in one go.
        if rtype.status and (rtype.group, rtype.plural) != ("", "nodes"):
            obj.pop("status", None)
        if (rtype.group, rtype.plural) == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
        obj = admission.admit(self, rtype, obj, None)
        m = meta(obj)
        if key in self.objects:
            raise ApiError.already_exists(rtype.plural, name, rtype.group)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = now_rfc3339(self.clock)
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            m.pop(transient, None)
        if rtype.generation:
            m["generation"] = 1
        else:
            m.pop("generation", None)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if dry_run:
            return self._out(rtype, obj)
        self._put(rtype, key, obj, None)
        admission.after_write(self, rtype, obj, None)
        return self._out(rtype, obj)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        subresource: str = "",
        require_version: bool | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT: the whole object (or its status, for ``subresource="status"``)."""
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request is not a JSON object")
        key, old = self._stored(rtype, namespace, name)
        m = body.get("metadata") or {}
        if m.get("name", name) != name:
            raise ApiError.bad_request(
                f"the name of the object ({m.get('name')}) does not match the name on the URL ({name})"
            )
        given = m.get("resourceVersion")
        # Custom resources refuse an unconditional update; built-in kinds accept it (as the real server).
        if not given and (rtype.custom if require_version is None else require_version):
            raise ApiError.invalid(
                rtype.kind,
                name,
                [Cause("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
                rtype.group,
            )
        if given and given != meta(old)["resourceVersion"]:
            raise ApiError.stale(rtype.plural, name, rtype.group)
        if rtype.namespaced and m.get("namespace", namespace) != namespace:
            raise _namespace_mismatch()
        return self._write(rtype, key, old, copy.deepcopy(body), subresource, dry_run)

    def _write(
        self, rtype: ResourceType, key: Key, old: Obj, new: Obj, subresource: str, dry_run: bool = False
    ) -> Obj:
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rtype.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        m, old_m = meta(new), meta(old)
        # What the server owns: clients cannot change these through an update.
        for owned in (
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if owned in old_m:
                m[owned] = old_m[owned]
            else:
                m.pop(owned, None)
        if old_m.get("deletionTimestamp"):
            # A deleting object cannot take new finalizers, as the real server refuses them.
            added = set(m.get("finalizers") or ()) - set(old_m.get("finalizers") or ())
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.qualified} "{key[3]}" is invalid: metadata.finalizers: '
                    f"Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {sorted(added)!r}",
                )
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        new = admission.admit(self, rtype, new, old)
        m = meta(new)
        if rtype.generation and self._spec_changed(rtype, old, new):
            m["generation"] = int(old_m.get("generation", 1)) + 1
        comparable = {**new, "metadata": {**m, "resourceVersion": old_m["resourceVersion"]}}
        if dry_run:
            return self._out(rtype, comparable)  # admitted as a write would be, and not stored
        if comparable == old:
            return self._out(rtype, old)  # a no-op write keeps the version, as the real server does
        self._put(rtype, key, new, old)
        admission.after_write(self, rtype, new, old)
        # The last finalizer gone ends a deletion; a pod in its grace period waits for the kubelet instead.
        if m.get("deletionTimestamp") and not m.get("finalizers") and not m.get("deletionGracePeriodSeconds"):
            self._remove(rtype, key)
        return self._out(rtype, new)

    @staticmethod
    def _spec_changed(rtype: ResourceType, old: Obj, new: Obj) -> bool:
        if rtype.custom:
            # A custom resource's generation moves on anything but metadata, and but status where
            # status is a subresource of its own (then status writes never touch generation).
            skipped = ("metadata", "apiVersion", "kind", *(("status",) if rtype.status else ()))

            def body(o: Obj) -> Obj:
                return {k: v for k, v in o.items() if k not in skipped}

            return body(old) != body(new)
        if rtype.generation_on_annotations and meta(old).get("annotations") != meta(new).get("annotations"):
            return True
        return old.get("spec") != new.get("spec")

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        kind: str,
        patch: Any,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """PATCH: ``kind`` is merge, json or strategic (see patches.patch_kind)."""
        from kube_test_server import patches

        key, old = self._stored(rtype, namespace, name)
        current = self._out(rtype, old)
        if kind == "merge":
            if not isinstance(patch, dict):
                raise ApiError.bad_request("a merge patch must be a JSON object")
            new = patches.merge_patch(current, patch)
        elif kind == "json":
            new = patches.json_patch(current, patch)
        elif kind == "strategic":
            if not rtype.strategic:
                raise ApiError.unsupported_media_type("application/strategic-merge-patch+json")
            if not isinstance(patch, dict):
                raise ApiError.bad_request("a strategic merge patch must be a JSON object")
            new = patches.strategic_merge_patch(current, patch, rtype.kind)
        else:
            raise ApiError.unsupported_media_type(kind)
        if not isinstance(new, dict):
            raise ApiError.bad_request("the patch does not leave an object")
        given = meta(new).get("resourceVersion")
        if given is None:
            meta(new)["resourceVersion"] = meta(old)["resourceVersion"]  # a null version: unconditional
        elif given != meta(old)["resourceVersion"]:
            # Only a patch that names a version gets here: that is a precondition, and it failed.
            raise ApiError.stale(rtype.plural, name, rtype.group)
        return self._write(rtype, key, old, new, subresource, dry_run)

    # --- /scale -------------------------------------------------------------------------------------

    def scale(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        if rtype.scale is None:
            raise ApiError.not_found(f"{rtype.plural}/scale", name, rtype.group)
        obj = self.get(rtype, namespace, name)
        m = meta(obj)
        if rtype.scale.label_selector is not None:
            selector = get_path(obj, rtype.scale.label_selector, "")
        else:
            from kube_test_server.selectors import to_string

            selector = to_string(get_path(obj, ".spec.selector") or {})
        status: Obj = {"replicas": int(get_path(obj, rtype.scale.status_replicas, 0) or 0)}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: m[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in m
            },
            "spec": {"replicas": int(get_path(obj, rtype.scale.spec_replicas, 0) or 0)},
            "status": status,
        }

    def write_scale(self, rtype: ResourceType, namespace: str | None, name: str, scale: Obj) -> Obj:
        assert rtype.scale is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError.invalid(
                "Scale",
                name,
                [Cause("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
                "autoscaling",
            )
        key, old = self._stored(rtype, namespace, name)
        given = (scale.get("metadata") or {}).get("resourceVersion")
        if given and given != meta(old)["resourceVersion"]:
            raise ApiError.stale(rtype.plural, name, rtype.group)
        current = self._out(rtype, old)
        set_path(current, rtype.scale.spec_replicas, replicas)
        self._write(rtype, key, old, current, "")
        return self.scale(rtype, namespace, name)

    # --- deletion -----------------------------------------------------------------------------------

    def delete(
        self, rtype: ResourceType, namespace: str | None, name: str, options: DeleteOptions | None = None
    ) -> tuple[Obj, bool]:
        """Returns the object and whether it is gone (False: finalizers or a graceful pod hold it)."""
        options = options or DeleteOptions()
        key, obj = self._stored(rtype, namespace, name)
        m = meta(obj)
        if options.uid and options.uid != m.get("uid"):
            raise ApiError.conflict(
                rtype.plural,
                name,
                f"Precondition failed: UID in precondition: "
                f"{options.uid}, UID in object meta: {m.get('uid')}",
                rtype.group,
            )
        if options.resource_version and options.resource_version != m.get("resourceVersion"):
            raise ApiError.conflict(
                rtype.plural,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{options.resource_version}, ResourceVersion in object meta: "
                f"{m.get('resourceVersion')}",
                rtype.group,
            )
        if options.dry_run:
            return self._out(rtype, obj), not m.get("finalizers")
        if rtype.group == "" and rtype.plural == "namespaces":
            return self._delete_namespace(rtype, key), False
        finalizers = list(m.get("finalizers") or [])
        if options.propagation == "Orphan":
            self._orphan(m["uid"])
        elif options.propagation == "Foreground" and self._dependents(m["uid"]):
            finalizers.append("foregroundDeletion")
        if rtype.group == "apiextensions.k8s.io" and self._custom_objects_of(obj):
            finalizers.append("customresourcecleanup.apiextensions.k8s.io")
        grace = self._pod_grace(rtype, obj, options)
        if m.get("deletionTimestamp") and grace < int(m.get("deletionGracePeriodSeconds") or 0):
            # A shorter grace on a second delete wins (the kubelet's final delete, or --force).
            if not m.get("finalizers") and grace == 0:
                return self._out(rtype, self._remove(rtype, key)), True
            held = copy.deepcopy(obj)
            meta(held)["deletionGracePeriodSeconds"] = grace
            meta(held)["deletionTimestamp"] = now_rfc3339(lambda: self.clock() + grace)
            self._put(rtype, key, held, obj)
            return self._out(rtype, held), False
        if finalizers or grace:
            if m.get("deletionTimestamp"):
                return self._out(rtype, obj), False
            held = copy.deepcopy(obj)
            hm = meta(held)
            hm["finalizers"] = list(dict.fromkeys(finalizers))
            if not hm["finalizers"]:
                del hm["finalizers"]
            hm["deletionTimestamp"] = now_rfc3339(lambda: self.clock() + (grace or 0))
            hm["deletionGracePeriodSeconds"] = grace or 0
            self._put(rtype, key, held, obj)
            self._after_delete_started(rtype, held)
            return self._out(rtype, held), False
        return self._out(rtype, self._remove(rtype, key)), True

    def _pod_grace(self, rtype: ResourceType, obj: Obj, options: DeleteOptions) -> int:
        if not (self.graceful_pods and rtype.group == "" and rtype.plural == "pods"):
            return 0
        if not get_path(obj, ".spec.nodeName") or get_path(obj, ".status.phase") in ("Succeeded", "Failed"):
            return 0  # an unscheduled or finished pod has nothing to stop: it goes at once
        if options.grace_period is not None:
            return max(0, options.grace_period)
        return int(get_path(obj, ".spec.terminationGracePeriodSeconds", 30))

    def _remove(self, rtype: ResourceType, key: Key) -> Obj:
        obj = self.objects.pop(key)
        self._kinds.get(key[:2], set()).discard(key)
        gone = copy.deepcopy(obj)
        meta(gone)["resourceVersion"] = str(self._bump())
        self._emit(Change("DELETED", self.revision, rtype.group, rtype.plural, key[2], gone, obj))
        admission.after_delete(self, rtype, gone)
        self._collect(meta(obj)["uid"])
        self._finish_namespaces()
        return gone

    def _after_delete_started(self, rtype: ResourceType, obj: Obj) -> None:
        m = meta(obj)
        if "foregroundDeletion" in (m.get("finalizers") or []):
            for dep_type, dep in self._dependents(m["uid"]):
                self._delete_quietly(dep_type, dep, DeleteOptions("Background"))
            self._release_foreground(m["uid"])
        if "customresourcecleanup.apiextensions.k8s.io" in (m.get("finalizers") or []):
            for cr_type, cr in list(self._custom_objects_of(obj)):
                self._delete_quietly(cr_type, cr, DeleteOptions())
            self._release_crd(obj)

    # --- garbage collection: what kube-controller-manager's GC does, synchronously -----------------

    def _type_of(self, obj: Obj) -> ResourceType | None:
        return self.registry.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for obj in self.objects.values():
            if any(ref.get("uid") == uid for ref in meta(obj).get("ownerReferences") or []):
                rtype = self._type_of(obj)
                if rtype is not None:
                    found.append((rtype, obj))
        return found

    def _delete_quietly(self, rtype: ResourceType, obj: Obj, options: DeleteOptions) -> None:
        m = meta(obj)
        with contextlib.suppress(ApiError):  # already gone: another cascade got there first
            self.delete(rtype, m.get("namespace"), m["name"], options)

    def _collect(self, uid: str) -> None:
        """An owner is gone: delete dependents that have no owner left, drop the dangling reference."""
        for rtype, dep in self._dependents(uid):
            refs = meta(dep).get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and self.find_uid(r.get("uid", "")) is not None]
            if alive:
                m = meta(dep)
                self._system_patch(
                    rtype,
                    dep,
                    {"metadata": {"ownerReferences": alive, "resourceVersion": m["resourceVersion"]}},
                )
            else:
                self._delete_quietly(rtype, dep, DeleteOptions("Background"))
        self._release_foreground(None)

    def _orphan(self, uid: str) -> None:
        for rtype, dep in self._dependents(uid):
            refs = [r for r in meta(dep).get("ownerReferences") or [] if r.get("uid") != uid]
            self._system_patch(rtype, dep, {"metadata": {"ownerReferences": refs or None}})

    def _release_foreground(self, uid: str | None) -> None:
        """Owners in foreground deletion whose dependents are all gone lose the finalizer, and go."""
        for key, obj in list(self.objects.items()):
            m = meta(obj)
            if "foregroundDeletion" not in (m.get("finalizers") or []) or (uid and m["uid"] != uid):
                continue
            if not self._dependents(m["uid"]):
                rest = [f for f in m["finalizers"] if f != "foregroundDeletion"]
                rtype = self._type_of(obj)
                if rtype is not None and key in self.objects:
                    self._system_patch(rtype, obj, {"metadata": {"finalizers": rest or None}})

    def _system_patch(self, rtype: ResourceType, obj: Obj, patch: Obj) -> None:
        from kube_test_server import patches

        m = meta(obj)
        key = self._key(rtype, m.get("namespace"), m["name"])
        if key in self.objects:
            self._write(rtype, key, self.objects[key], patches.merge_patch(self.objects[key], patch), "")

    # --- CRDs and namespaces ------------------------------------------------------------------------

    def _custom_objects_of(self, crd: Obj) -> list[tuple[ResourceType, Obj]]:
        spec = crd.get("spec") or {}
        group, plural = str(spec.get("group", "")), str((spec.get("names") or {}).get("plural", ""))
        types = self.registry.versions_of(group, plural)
        if not types:
            return []
        return [(types[0], o) for (g, p, _, _), o in list(self.objects.items()) if g == group and p == plural]

    def _release_crd(self, crd: Obj) -> None:
        if self._custom_objects_of(crd):
            return
        rtype = self.registry.find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        key = ("apiextensions.k8s.io", "customresourcedefinitions", "", meta(crd)["name"])
        if rtype is not None and key in self.objects:
            current = self.objects[key]
            rest = [
                f
                for f in meta(current).get("finalizers") or []
                if f != "customresourcecleanup.apiextensions.k8s.io"
            ]
            self._system_patch(rtype, current, {"metadata": {"finalizers": rest or None}})

    def release_crds(self) -> None:
        """A custom object went away: a CRD waiting to be cleaned up may go now."""
        # From the kind's index, not a scan of the store: this runs on every custom object's removal.
        for key in sorted(self._kinds.get(("apiextensions.k8s.io", "customresourcedefinitions"), ())):
            obj = self.objects.get(key)  # an earlier release may have let it go already
            if obj is not None and meta(obj).get("deletionTimestamp"):
                self._release_crd(obj)

    def _delete_namespace(self, rtype: ResourceType, key: Key) -> Obj:
        obj = self.objects[key]
        if not meta(obj).get("deletionTimestamp"):
            held = copy.deepcopy(obj)
            meta(held)["deletionTimestamp"] = now_rfc3339(self.clock)
            held.setdefault("status", {})["phase"] = "Terminating"
            self._put(rtype, key, held, obj)
            for (_, _, ns, _), inner in list(self.objects.items()):
                if ns == key[3]:
                    inner_type = self._type_of(inner)
                    if inner_type is not None:
                        self._delete_quietly(inner_type, inner, DeleteOptions())
            self._finish_namespaces()
        return self._out(rtype, self.objects.get(key, obj))

    def _finish_namespaces(self) -> None:
        # From the kind's index, not a scan of the store: this runs on every removal.
        for key in sorted(self._kinds.get(("", "namespaces"), ())):
            obj = self.objects.get(key)  # an earlier removal may have finished it already
            if obj is None or not meta(obj).get("deletionTimestamp"):
                continue
            if not any(k[2] == key[3] for k in self.objects):
                ns_type = self.registry.find("", "v1", "namespaces")
                assert ns_type is not None
                self._remove(ns_type, key)

    # --- watch support ------------------------------------------------------------------------------

    def changes_since(self, version: int) -> list[Change]:
        """Changes after ``version``; raises 410 Expired when the history no longer reaches back."""
        if version < self.compacted:
            raise ApiError.gone(f"too old resource version: {version} ({self.compacted})")
        return [c for c in self.history if c.resource_version > version]
