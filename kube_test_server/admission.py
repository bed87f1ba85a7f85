"""Per-kind rules applied on every write: name checks, the defaults and validation the real server applies
to the kinds the operator writes, custom resources against their CRD's schema, and CRD registration."""

from __future__ import annotations

import copy
import ipaddress
import itertools
from typing import TYPE_CHECKING, Any

from kube_test_server import schema
from kube_test_server.errors import ApiError, Cause
from kube_test_server.resources import ResourceType
from kube_test_server.selectors import DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN, LabelSelector

if TYPE_CHECKING:
    from kube_test_server.store import Obj, Store

_cluster_ips = (f"10.96.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def _name_causes(rtype: ResourceType, name: str) -> list[Cause]:
    if not name:
        return [
            Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
        ]
    if rtype.plural == "namespaces" and rtype.group == "":
        fmt = DNS1123_LABEL
    elif rtype.plural == "services" and rtype.group == "":
        fmt = DNS1035_LABEL
    else:
        fmt = DNS1123_SUBDOMAIN
    if len(name) > fmt.max_length:
        problem = f"must be no more than {fmt.max_length} characters"
    elif not fmt.matches(name):
        problem = fmt.message
    else:
        return []
    return [Cause("metadata.name", f'Invalid value: "{name}": {problem}')]


def admit(store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
    """The object as it will be stored, or ApiError 422 with one cause per problem."""
    m = obj["metadata"]
    name = m.get("name") or ""
    causes = _name_causes(rtype, name) if old is None else []
    if rtype.custom and rtype.schema is not None:
        obj, found = schema.admit(obj, rtype.schema, old)
        causes += found
    else:
        check = _CHECKS.get((rtype.group, rtype.plural))
        if check is not None:
            obj = copy.deepcopy(obj)
            causes += check(obj, old)
    if causes:
        raise ApiError.invalid(rtype.kind, name, causes, rtype.group)
    return obj


# --- built-in kinds: the defaults and checks an operator meets when it writes them ------------------


def _pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    if "@" in tag:
        return "IfNotPresent"
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for k, v in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(k, v)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _pod_spec(spec: Any, field: str) -> list[Cause]:
    """Defaults (as SetDefaults_PodSpec and friends) and the checks a pod spec cannot pass without."""
    if not isinstance(spec, dict):
        return [Cause(field, "Required value", "FieldValueRequired")]
    causes = []
    for k, v in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("securityContext", {}),
        ("schedulerName", "default-scheduler"),
    ):
        spec.setdefault(k, v)
    containers = spec.get("containers")
    if not containers:
        causes.append(Cause(f"{field}.containers", "Required value", "FieldValueRequired"))
    for i, c in enumerate(containers or []):
        where = f"{field}.containers[{i}]"
        if not isinstance(c, dict):
            causes.append(Cause(where, "Invalid value: must be an object", "FieldValueTypeInvalid"))
            continue
        if not c.get("name"):
            causes.append(Cause(f"{where}.name", "Required value", "FieldValueRequired"))
        if not c.get("image"):
            causes.append(Cause(f"{where}.image", "Required value", "FieldValueRequired"))
        else:
            c.setdefault("imagePullPolicy", _pull_policy(c["image"]))
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for port in c.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            _default_probe(c.get(probe))
        names = [e.get("name") for e in c.get("env") or [] if isinstance(e, dict)]
        for dup in sorted({n for n in names if names.count(n) > 1 and n}):
            causes.append(Cause(f"{where}.env", f'Duplicate value: "{dup}"', "FieldValueDuplicate"))
    return causes


def _pod(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    causes = _pod_spec(spec, "spec")
    if isinstance(spec, dict):
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
    if old is None:
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif isinstance(spec, dict) and _pod_spec_changed(spec, old.get("spec") or {}):
        causes.append(Cause("spec", f"Forbidden: {_POD_UPDATE}", "FieldValueForbidden"))
    return causes


_POD_UPDATE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


_POD_SPEC_MUTABLE = (
    "activeDeadlineSeconds",
    "tolerations",
    "terminationGracePeriodSeconds",
    "schedulingGates",
)


def _pod_spec_changed(new: Obj, old: Obj) -> bool:
    """A pod's spec is immutable but for images and a few fields; binding sets nodeName once."""
    ignored = set(_POD_SPEC_MUTABLE)
    if not old.get("nodeName"):
        ignored.add("nodeName")  # what pods/binding does; the scheduler here binds by patch
    normalized = copy.deepcopy({k: v for k, v in new.items() if k not in ignored})
    for kind in ("containers", "initContainers"):
        for new_c, old_c in zip(normalized.get(kind) or [], old.get(kind) or [], strict=False):
            if isinstance(new_c, dict) and isinstance(old_c, dict):
                new_c["image"] = old_c.get("image")
    return normalized != {k: v for k, v in old.items() if k not in ignored}


def _deployment(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "Required value", "FieldValueRequired")]
    for k, v in (("replicas", 1), ("revisionHistoryLimit", 10), ("progressDeadlineSeconds", 600)):
        spec.setdefault(k, v)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    template = spec.get("template") or {}
    causes = _pod_spec(template.get("spec"), "spec.template.spec")
    selector = spec.get("selector")
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        causes.append(Cause("spec.selector", "Required value", "FieldValueRequired"))
    elif not LabelSelector.from_dict(selector).matches(labels):
        causes.append(
            Cause(
                "spec.template.metadata.labels",
                f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            )
        )
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        causes.append(Cause("spec.selector", f"Invalid value: {selector!r}: field is immutable"))
    if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
        causes.append(
            Cause("spec.replicas", f"Invalid value: {spec['replicas']}: must be greater than or equal to 0")
        )
    return causes


def _service(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if old is None:
        if spec.get("clusterIP") != "None":
            spec.setdefault("clusterIP", next(_cluster_ips))
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    else:
        spec["clusterIP"] = (old.get("spec") or {}).get("clusterIP")
        spec["clusterIPs"] = (old.get("spec") or {}).get("clusterIPs")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    causes = []
    for i, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            causes.append(Cause(f"spec.ports[{i}].port", "Required value", "FieldValueRequired"))
            continue
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
    return causes


def _endpoint_slice(obj: Obj, old: Obj | None) -> list[Cause]:
    """The real server refuses loopback and link-local addresses in EndpointSlices (a 422)."""
    causes = []
    for i, endpoint in enumerate(obj.get("endpoints") or []):
        for j, address in enumerate(endpoint.get("addresses") or []):
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            if ip.is_loopback:
                causes.append(
                    Cause(
                        f"endpoints[{i}].addresses[{j}]",
                        f'Invalid value: "{address}": may not be in the loopback range '
                        "(127.0.0.0/8, ::1/128)",
                    )
                )
            elif ip.is_link_local:
                causes.append(
                    Cause(
                        f"endpoints[{i}].addresses[{j}]",
                        f'Invalid value: "{address}": may not be in the link-local range '
                        "(169.254.0.0/16, fe80::/10)",
                    )
                )
    if not obj.get("addressType"):
        causes.append(Cause("addressType", "Required value", "FieldValueRequired"))
    return causes


def _crd(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    for required in ("group", "names", "scope", "versions"):
        if not spec.get(required):
            causes.append(Cause(f"spec.{required}", "Required value", "FieldValueRequired"))
    for required in ("plural", "kind"):
        if not names.get(required):
            causes.append(Cause(f"spec.names.{required}", "Required value", "FieldValueRequired"))
    if causes:
        return causes
    expected = f"{names['plural']}.{spec['group']}"
    if obj["metadata"].get("name") != expected:
        causes.append(
            Cause(
                "metadata.name",
                f'Invalid value: "{obj["metadata"].get("name")}": must be spec.names.plural+"."+spec.group',
            )
        )
    if spec["scope"] not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "spec.scope",
                f'Unsupported value: "{spec["scope"]}": supported values: "Cluster", "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    versions = spec["versions"]
    if sum(bool(v.get("storage")) for v in versions) != 1:
        causes.append(
            Cause("spec.versions", "Invalid value: must have exactly one version marked as storage version")
        )
    for i, version in enumerate(versions):
        root = (version.get("schema") or {}).get("openAPIV3Schema")
        if root is None:
            causes.append(
                Cause(
                    f"spec.versions[{i}].schema.openAPIV3Schema",
                    "Required value: schemas are required",
                    "FieldValueRequired",
                )
            )
            continue
        if root.get("type") != "object":
            causes.append(
                Cause(
                    f"spec.versions[{i}].schema.openAPIV3Schema.type",
                    "Required value: must be object at the root",
                    "FieldValueRequired",
                )
            )
        where = f"spec.versions[{i}].schema.openAPIV3Schema"
        for problem in schema.rule_problems(root, where):
            # The line starts with its own path; the field repeats the schema's root so causes group.
            causes.append(
                Cause(where, f"{problem} (docs/kube-test-server.md lists what this server evaluates)")
            )
    spec.setdefault("conversion", {"strategy": "None"})
    return causes


_CHECKS = {
    ("", "pods"): _pod,
    ("apps", "deployments"): _deployment,
    ("", "services"): _service,
    ("discovery.k8s.io", "endpointslices"): _endpoint_slice,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}


# --- what follows a write ----------------------------------------------------------------------------


def after_write(store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
    if (rtype.group, rtype.plural) != ("apiextensions.k8s.io", "customresourcedefinitions"):
        return
    if obj["metadata"].get("deletionTimestamp"):
        return
    name = obj["metadata"]["name"]
    store.registry.add_crd(name, obj)
    spec = obj["spec"]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    wanted = {
        "acceptedNames": {k: v for k, v in spec["names"].items()},
        "storedVersions": sorted({*((obj.get("status") or {}).get("storedVersions") or []), storage}),
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": r,
                "message": msg,
                "lastTransitionTime": obj["metadata"]["creationTimestamp"],
            }
            for t, r, msg in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
    }
    if obj.get("status") != wanted:
        store.replace(rtype, None, name, {**obj, "status": wanted}, subresource="status")


def after_delete(store: Store, rtype: ResourceType, obj: Obj) -> None:
    if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
        store.registry.remove_crd(obj["metadata"]["name"])
    elif rtype.custom:
        store.release_crds()
