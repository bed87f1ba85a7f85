"""The kinds the server serves: built-in ones from a table, custom ones from CRDs, and discovery documents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ScalePaths:
    """Where a ``/scale`` subresource reads and writes; JSON paths as in a CRD's ``scale`` block."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceType:
    """One served resource at one group/version."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # A kind with a status subresource ignores status on its main endpoint, and /status writes only status.
    status: bool = False
    scale: ScalePaths | None = None
    # Built-in kinds take strategic merge patch; custom resources answer it with 415, as the real server does.
    strategic: bool = True
    # metadata.generation: set and bumped on spec changes for these kinds only (ConfigMaps have none).
    generation: bool = False
    # The Deployment strategy also bumps generation when annotations change (rollback annotations).
    generation_on_annotations: bool = False
    schema: dict[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    # The CRD's version also carries apiVersion/kind on list items; built-in lists strip them.
    custom: bool = False
    # A CRD version's selectableFields (JSON paths such as ``.spec.color``): field selectors may name them.
    selectable: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps``: the real server's wording in errors."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    **options: Any,
) -> ResourceType:
    return ResourceType(
        group,
        version,
        kind,
        plural,
        namespaced,
        kind.lower(),
        short,
        categories,
        **options,
    )


_REPLICAS = ScalePaths(label_selector=None)  # apps kinds compute the selector from spec.selector


def _columns(*columns: tuple[str, str, str, int]) -> tuple[PrinterColumn, ...]:
    """Columns for ``kubectl get`` of a built-in kind: a few of the real server's, from plain JSON paths."""
    return tuple(PrinterColumn(name, kind, path, priority=priority) for name, kind, path, priority in columns)


_READY = '.status.conditions[?(@.type=="Ready")].status'

BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", False, ("ns",), status=True),
    _builtin(
        "",
        "v1",
        "Node",
        "nodes",
        False,
        ("no",),
        status=True,
        printer_columns=_columns(
            ("Ready", "string", _READY, 0), ("GPUs", "string", '.status.allocatable["nvidia.com/gpu"]', 0)
        ),
    ),
    _builtin(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        ("all",),
        status=True,
        printer_columns=_columns(
            ("Ready", "string", _READY, 0),
            ("Status", "string", ".status.phase", 0),
            ("IP", "string", ".status.podIP", 1),
            ("Node", "string", ".spec.nodeName", 1),
        ),
    ),
    _builtin(
        "",
        "v1",
        "Service",
        "services",
        True,
        ("svc",),
        ("all",),
        status=True,
        printer_columns=_columns(
            ("Type", "string", ".spec.type", 0), ("Cluster-IP", "string", ".spec.clusterIP", 0)
        ),
    ),
    _builtin("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    _builtin("", "v1", "Event", "events", True, ("ev",)),
    _builtin("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    _builtin("", "v1", "Secret", "secrets", True),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    _builtin(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        ("deploy",),
        ("all",),
        status=True,
        scale=_REPLICAS,
        generation=True,
        generation_on_annotations=True,
        printer_columns=_columns(
            ("Replicas", "integer", ".spec.replicas", 0),
            ("Ready", "integer", ".status.readyReplicas", 0),
            ("Available", "integer", ".status.availableReplicas", 0),
        ),
    ),
    _builtin(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        True,
        ("rs",),
        ("all",),
        status=True,
        scale=_REPLICAS,
        generation=True,
        printer_columns=_columns(
            ("Desired", "integer", ".spec.replicas", 0), ("Ready", "integer", ".status.readyReplicas", 0)
        ),
    ),
    _builtin(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        True,
        ("sts",),
        ("all",),
        status=True,
        scale=_REPLICAS,
        generation=True,
    ),
    _builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases", True),
    _builtin("events.k8s.io", "v1", "Event", "events", True, ("ev",)),
    _builtin(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        True,
        ("pdb",),
        status=True,
        generation=True,
    ),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        ("crd", "crds"),
        status=True,
        generation=True,
    ),
)

# The preferred version of each built-in group, in the order /apis lists them.
_BUILTIN_GROUPS = (
    "apps",
    "discovery.k8s.io",
    "coordination.k8s.io",
    "events.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
)


def custom_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CRD (apiextensions.k8s.io/v1) as resource types."""
    spec = crd["spec"]
    names = spec["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subresources,
                scale=ScalePaths(
                    scale["specReplicasPath"], scale["statusReplicasPath"], scale.get("labelSelectorPath")
                )
                if scale is not None
                else None,
                strategic=False,
                generation=True,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(
                    PrinterColumn(
                        c["name"], c["type"], c["jsonPath"], c.get("description", ""), c.get("priority", 0)
                    )
                    for c in version.get("additionalPrinterColumns") or ()
                ),
                custom=True,
                selectable=tuple(f["jsonPath"] for f in version.get("selectableFields") or ()),
            )
        )
    return types


@dataclass
class Registry:
    """Which resource types are served now; CRDs add and remove theirs while the server runs."""

    types: list[ResourceType] = field(default_factory=lambda: list(BUILTINS))
    # CRD name → the types it added, so deleting the CRD removes exactly those.
    by_crd: dict[str, list[ResourceType]] = field(default_factory=dict)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        for t in self.types:
            if t.group == group and t.version == version and t.plural == plural:
                return t
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for t in self.types:
            if t.api_version == api_version and t.kind == kind:
                return t
        return None

    def in_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.types if t.group == group and t.version == version]

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        return [t for t in self.types if t.group == group and t.plural == plural]

    def add_crd(self, name: str, crd: dict[str, Any]) -> None:
        self.remove_crd(name)
        added = custom_types(crd)
        self.by_crd[name] = added
        self.types.extend(added)

    def remove_crd(self, name: str) -> None:
        for t in self.by_crd.pop(name, []):
            self.types.remove(t)

    def groups(self) -> Iterator[tuple[str, list[str]]]:
        """(group, versions with the preferred first) for every group but the core one."""
        seen: dict[str, list[str]] = {g: [] for g in _BUILTIN_GROUPS}
        for t in self.types:
            if t.group and t.version not in seen.setdefault(t.group, []):
                seen[t.group].append(t.version)
        for group, versions in seen.items():
            if versions:
                yield group, _by_priority(versions)


def _by_priority(versions: Iterable[str]) -> list[str]:
    """Kubernetes version priority: GA before beta before alpha, higher numbers first."""
    import re

    def key(v: str) -> tuple[int, int, int]:
        m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
        if not m:
            return (3, 0, 0)
        stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
        return (stage, -int(m.group(1)), -int(m.group(3) or 0))

    return sorted(versions, key=key)


# --- discovery documents -----------------------------------------------------------------------------


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/{group}/{version}``: an APIResourceList, subresources included."""
    served = registry.in_version(group, version)
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for t in served:
        entry: dict[str, Any] = {
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
        }
        if t.short_names:
            entry["shortNames"] = list(t.short_names)
        if t.categories:
            entry["categories"] = list(t.categories)
        resources.append(entry)
        if t.status:
            resources.append(
                {
                    "name": f"{t.plural}/status",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if t.scale is not None:
            resources.append(
                {
                    "name": f"{t.plural}/scale",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def group_list(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.groups()],
    }


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    for g, versions in registry.groups():
        if g == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, versions)}
    return None


def core_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


# --- OpenAPI v3, only as far as kubectl reads it -------------------------------------------------------


def openapi_root(registry: Registry) -> dict[str, Any]:
    """``/openapi/v3``: kubectl looks here to learn that PATCH takes ``fieldValidation`` and ``dryRun``."""
    gvs = {("api/" if not t.group else "apis/") + t.api_version for t in registry.types}
    return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}"} for gv in sorted(gvs)}}


def openapi_group_version(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """One PATCH operation per kind, tagged with its group/version/kind and the query parameters it takes.

    No schemas: kubectl then validates on the server (``fieldValidation``), and falls back to its own
    compiled-in types to compute strategic merge patches.
    """
    served = registry.in_version(group, version)
    if not served:
        return None
    params = [
        {"name": n, "in": "query", "schema": {"type": "string"}}
        for n in ("dryRun", "fieldManager", "fieldValidation")
    ]
    paths = {}
    for t in served:
        gvk = {"group": t.group, "version": t.version, "kind": t.kind}
        paths[t.path("{namespace}", "{name}")] = {
            "patch": {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}}
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.31.0"}, "paths": paths}
