"""The Kubernetes objects the operator owns for one GpuInferenceService, as plain dicts.

Pure functions of the parsed resource: no API calls, no kopf, no clock. The operator applies what
`build_owned` returns, in order; the tests check every object against the official schemas of several
Kubernetes versions and the pod templates against the `restricted` Pod Security Standard.

What runs:
- `<name>-model`: a Deployment of the user's image, one container, one server process (the pod
  server runs one uvicorn worker by design, so there is no worker setting to pass), and a headless
  Service of the same name (stable per-pod DNS; the gateway itself finds pods by watching them).
- `<name>-gateway`: the gateway (`gpuscale gateway`, shipped in the operator image, since both are the
  one `gpuscale` distribution), its ServiceAccount, and a Role to watch the model pods.
- `<name>`: the Service clients use, port 80. It selects the gateway, or the model pods directly when
  `spec.gateway.enabled` is false.

`spec.template` overrides for the model pods (other keys are ignored; `unknown_template_keys` lists
them for the operator's IgnoredTemplateKeys Warning Event):
- `env`: appended to the variables the spec sets (`SPEC_ENV` names are the spec's and are dropped);
- pod: `nodeSelector`, `tolerations`, `affinity`, `topologySpreadConstraints`, `priorityClassName`,
  `runtimeClassName`, `schedulerName`, `imagePullSecrets`, `serviceAccountName`,
  `automountServiceAccountToken`, `hostAliases`, `dnsPolicy`, `dnsConfig`, `initContainers` replace
  ours; `securityContext` is merged key by key over ours; `volumes` are merged by name;
- pod metadata: `labels` (ours win, since selectors depend on them), `annotations`;
- the container: `command`, `args`, `workingDir`, `envFrom`, `imagePullPolicy`, `readinessProbe`,
  `livenessProbe`, `startupProbe` replace ours (servers other than ours, vLLM say, answer health on
  other paths); `resources` is merged (the GPU count is always `gpusPerReplica`);
  `containerSecurityContext` is merged key by key over ours; `volumeMounts` are merged by mountPath.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from gpuscale.spec import GpuInferenceService

Manifest = dict[str, Any]
Component = Literal["model", "gateway"]

GPU_RESOURCE: Final = "nvidia.com/gpu"
# Set by the operator on pods at runtime (idle pods cheapest, so a scale-down takes them first); the
# builders leave it alone so that applying a Deployment never resets it.
DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# The gateway is part of the `gpuscale` distribution, so the operator's image runs it as well.
DEFAULT_GATEWAY_IMAGE: Final = "gpuscale-operator:0.1.0"

NAME_LABEL: Final = "app.kubernetes.io/name"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
SERVICE_LABEL: Final = "gpuscale.io/service"
APP_NAME: Final = "gpuscale"
MANAGER: Final = "gpuscale-operator"

MODEL_CONTAINER: Final = "model"
GATEWAY_CONTAINER: Final = "gateway"
SERVICE_PORT: Final = 80
GATEWAY_PORT: Final = 8080
GATEWAY_ADMIN_PORT: Final = 8081

# The restricted Pod Security Standard needs a non-root user. Naming one (rather than trusting the
# image's USER) lets images built to run as root start anyway; 65532 is the usual "nonroot" uid.
RUN_AS_USER: Final = 65532

# Before SIGTERM, let the endpoints controller, kube-proxy and the gateway's pod watch drop the pod,
# so that no new request reaches a server that has begun to drain. An `exec` of `sleep` rather than
# the `sleep` lifecycle action: that action is alpha (off) on 1.29, where the API server would drop it
# and reject the handler as empty. An image without a `sleep` binary only loses the delay (the kubelet
# records FailedPreStopHook and sends SIGTERM at once).
PRE_STOP_SECONDS: Final = 5
# The pod server's drain deadline is the longest request plus this: room for a request the gateway
# prefetched behind the running one to be answered 503 cleanly rather than cut off.
DRAIN_SLACK_SECONDS: Final = 15
# Between the server's own drain deadline and the kubelet's SIGKILL: time to answer and exit.
EXIT_SLACK_SECONDS: Final = 10
# The gateway drains for its queue timeout plus the longest request, but no longer than this: a
# gateway pod goes only on a rollout (its successor already serves) or a node drain, which should not
# wait for hours on a CPU pod. Whatever it still holds then gets a 503 from the gateway itself.
GATEWAY_MAX_DRAIN_SECONDS: Final = 3600.0

# Model servers may listen only once their weights are loaded (vLLM, Triton do): the startup probe
# holds off the liveness probe, which would otherwise restart a pod that is still loading. Ten minutes.
STARTUP_PERIOD_SECONDS: Final = 2
STARTUP_FAILURE_THRESHOLD: Final = 300

HEALTH_READY: Final = "/v2/health/ready"
HEALTH_LIVE: Final = "/v2/health/live"
GATEWAY_HEALTHZ: Final = "/healthz"
GATEWAY_READYZ: Final = "/readyz"

# The pod server's variables (inference_app.settings.ServerSettings, prefix GPUSCALE_) that the spec
# sets; template.env entries of these names are dropped, since probes, ports, the gateway's slot count
# and the termination grace are all computed from the spec.
SPEC_ENV: Final = (
    "GPUSCALE_HOST",
    "GPUSCALE_PORT",
    "GPUSCALE_SLOTS",
    "GPUSCALE_MAX_REQUEST_SECONDS",
    "GPUSCALE_DRAIN_SECONDS",
)

POD_REPLACED_KEYS: Final = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "runtimeClassName",
    "schedulerName",
    "imagePullSecrets",
    "serviceAccountName",
    "automountServiceAccountToken",
    "hostAliases",
    "dnsPolicy",
    "dnsConfig",
    "initContainers",
)
CONTAINER_REPLACED_KEYS: Final = (
    "command",
    "args",
    "workingDir",
    "envFrom",
    "imagePullPolicy",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
)
MERGED_KEYS: Final = (
    "labels",
    "annotations",
    "securityContext",
    "containerSecurityContext",
    "resources",
    "volumes",
    "volumeMounts",
)
TEMPLATE_KEYS: Final = frozenset({"env", *POD_REPLACED_KEYS, *CONTAINER_REPLACED_KEYS, *MERGED_KEYS})


class TemplateError(ValueError):
    """A `spec.template` override of the wrong shape (a list where a mapping belongs, say)."""


# Labels and references


def labels(service: GpuInferenceService, component: Component | None = None) -> dict[str, str]:
    """Labels on every object of the service (and the component's, when one is named)."""
    result = {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: service.name,
        MANAGED_BY_LABEL: MANAGER,
        SERVICE_LABEL: service.name,
    }
    if component is not None:
        result[COMPONENT_LABEL] = component
    return result


def selector_labels(service: GpuInferenceService, component: Component) -> dict[str, str]:
    """The labels a Deployment and Service select by. A Deployment's selector cannot change once
    created, so these stay few and never depend on anything but the name."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: service.name, COMPONENT_LABEL: component}


def label_selector(service: GpuInferenceService, component: Component = "model") -> str:
    """`selector_labels` as a label-selector string (the gateway's `--kube-selector`, `status.selector`)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(service, component).items())


def owner_reference(cr: Mapping[str, Any]) -> dict[str, Any]:
    """The owner reference to the CR body, so that deleting the CR deletes everything built here."""
    metadata = cr["metadata"]
    return {
        "apiVersion": cr["apiVersion"],
        "kind": cr["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def model_name(service: GpuInferenceService) -> str:
    return f"{service.name}-model"


def gateway_name(service: GpuInferenceService) -> str:
    return f"{service.name}-gateway"


def _metadata(
    service: GpuInferenceService, name: str, owner: Mapping[str, Any], component: Component
) -> Manifest:
    return {
        "name": name,
        "namespace": service.metadata.namespace,
        "labels": labels(service, component),
        "ownerReferences": [dict(owner)],
    }


# Numbers as text


def _number(value: float) -> str:
    """A float as the shortest text that reads back to it ("60", "0.5"), for env vars and flags."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def model_drain_seconds(service: GpuInferenceService) -> float:
    return service.spec.max_request_seconds + DRAIN_SLACK_SECONDS


def model_grace_seconds(service: GpuInferenceService) -> int:
    """Time from deletion to SIGKILL: the preStop delay, then the server's whole drain, then exit."""
    return (
        PRE_STOP_SECONDS
        + math.ceil(service.spec.max_request_seconds)
        + DRAIN_SLACK_SECONDS
        + EXIT_SLACK_SECONDS
    )


def gateway_drain_seconds(service: GpuInferenceService) -> float:
    """A request the gateway accepted may wait its queue timeout and then run the longest request."""
    spec = service.spec
    return min(spec.gateway.queue_timeout_seconds + spec.max_request_seconds, GATEWAY_MAX_DRAIN_SECONDS)


def gateway_grace_seconds(service: GpuInferenceService) -> int:
    return PRE_STOP_SECONDS + math.ceil(gateway_drain_seconds(service)) + EXIT_SLACK_SECONDS


# Pieces shared by both pod templates


def _pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _pre_stop() -> Manifest:
    return {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}}


def _http_probe(
    path: str, port: str, period: int, timeout: int, failures: int, *, initial_delay: int = 0
) -> Manifest:
    probe: Manifest = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


def _env(pairs: Iterable[tuple[str, str]]) -> list[Manifest]:
    return [{"name": name, "value": value} for name, value in pairs]


# Template overrides


def template_overrides(service: GpuInferenceService) -> dict[str, Any]:
    """The extra keys of `spec.template` (everything but `env`), copied so the result may be mutated."""
    return copy.deepcopy(dict(service.spec.template.model_extra or {}))


def unknown_template_keys(service: GpuInferenceService) -> list[str]:
    """Keys of `spec.template` that the builders ignore, for the operator to warn about."""
    return sorted(set(template_overrides(service)) - TEMPLATE_KEYS)


def _mapping(overrides: Mapping[str, Any], key: str, where: str = "spec.template") -> dict[str, Any]:
    value = overrides.get(key) or {}
    if not isinstance(value, Mapping):
        raise TemplateError(f"{where}.{key}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _named_list(overrides: Mapping[str, Any], key: str, by: str) -> list[Manifest]:
    value = overrides.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) and by in v for v in value):
        raise TemplateError(f"spec.template.{key}: expected a list of mappings, each with {by!r}")
    return [dict(v) for v in value]


def _merge_by(ours: list[Manifest], theirs: list[Manifest], key: str) -> list[Manifest]:
    """Ours, with each entry the user gives for the same key replacing ours in place; theirs after."""
    given = {entry[key]: entry for entry in theirs}
    merged = [given.pop(entry[key], entry) for entry in ours]
    return merged + list(given.values())


def _resources(service: GpuInferenceService, overrides: Mapping[str, Any]) -> Manifest:
    given = _mapping(overrides, "resources")
    resources: Manifest = {}
    for part in ("requests", "limits"):
        values = _mapping(given, part, "spec.template.resources")
        values.pop(GPU_RESOURCE, None)
        # An extended resource such as a GPU cannot be overcommitted: requests must equal limits.
        if service.spec.gpus_per_replica > 0:
            values[GPU_RESOURCE] = str(service.spec.gpus_per_replica)
        if values:
            resources[part] = values
    for key, value in given.items():
        if key not in ("requests", "limits"):
            resources[key] = value  # claims, and whatever later versions add
    return resources


# The model


def model_env(service: GpuInferenceService) -> list[Manifest]:
    """The spec's variables for the pod server, then `template.env` without those names."""
    spec = service.spec
    ours = _env(
        [
            ("GPUSCALE_HOST", "0.0.0.0"),
            ("GPUSCALE_PORT", str(spec.port)),
            ("GPUSCALE_SLOTS", str(spec.slots_per_replica)),
            ("GPUSCALE_MAX_REQUEST_SECONDS", _number(spec.max_request_seconds)),
            ("GPUSCALE_DRAIN_SECONDS", _number(model_drain_seconds(service))),
        ]
    )
    # Kubernetes keeps the last of duplicate names; keep the user's last one too, in the user's order.
    theirs: dict[str, str] = {}
    for var in spec.template.env:
        if var.name not in SPEC_ENV:
            theirs.pop(var.name, None)
            theirs[var.name] = var.value
    return ours + _env(theirs.items())


def _model_container(service: GpuInferenceService, overrides: Mapping[str, Any]) -> Manifest:
    spec = service.spec
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.gpus_per_replica > 1:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    container: Manifest = {
        "name": MODEL_CONTAINER,
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": model_env(service),
        "startupProbe": _http_probe(
            HEALTH_LIVE, "http", STARTUP_PERIOD_SECONDS, 2, STARTUP_FAILURE_THRESHOLD
        ),
        # Every second: a pod that finishes loading joins the gateway at once (scale-up latency).
        "readinessProbe": _http_probe(HEALTH_READY, "http", 1, 1, 3),
        # A minute of silence before a restart: the server answers while a request runs on the GPU.
        "livenessProbe": _http_probe(HEALTH_LIVE, "http", 10, 5, 6),
        "lifecycle": _pre_stop(),
        "securityContext": _container_security_context() | _mapping(overrides, "containerSecurityContext"),
        "volumeMounts": _merge_by(mounts, _named_list(overrides, "volumeMounts", "mountPath"), "mountPath"),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(service, overrides)
    if resources:
        container["resources"] = resources
    for key in CONTAINER_REPLACED_KEYS:
        if key in overrides:
            container[key] = overrides[key]
    return container


def _model_pod_spec(service: GpuInferenceService, overrides: Mapping[str, Any]) -> Manifest:
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    if service.spec.gpus_per_replica > 1:
        # Several GPUs in one pod talk through shared memory (NCCL); the runtime's 64 MiB is too small.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    pod: Manifest = {
        "containers": [_model_container(service, overrides)],
        # A Service named `gpuscale` would otherwise inject GPUSCALE_PORT=tcp://... into the server.
        "enableServiceLinks": False,
        # The model server never calls the API server; a user who needs it sets this in the template.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": model_grace_seconds(service),
        "securityContext": _pod_security_context() | _mapping(overrides, "securityContext"),
        "volumes": _merge_by(volumes, _named_list(overrides, "volumes", "name"), "name"),
    }
    for key in POD_REPLACED_KEYS:
        if key in overrides:
            pod[key] = overrides[key]
    return pod


def build_model_deployment(service: GpuInferenceService, owner: Mapping[str, Any], replicas: int) -> Manifest:
    """The model Deployment with `replicas` pods (the autoscaler's count; 0 when scaled to zero)."""
    if replicas < 0:
        raise ValueError(f"replicas must be 0 or more, got {replicas}")
    overrides = template_overrides(service)
    selector = selector_labels(service, "model")
    pod_labels = {str(k): str(v) for k, v in _mapping(overrides, "labels").items()} | labels(service, "model")
    pod_annotations = {str(k): str(v) for k, v in _mapping(overrides, "annotations").items()}
    pod_annotations["kubectl.kubernetes.io/default-container"] = MODEL_CONTAINER
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(service, model_name(service), owner, "model"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # Never below the current capacity during a rollout: a new pod is ready before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _model_pod_spec(service, overrides),
            },
        },
    }


def build_model_service(service: GpuInferenceService, owner: Mapping[str, Any]) -> Manifest:
    """A headless Service of the ready model pods: per-pod DNS names, and endpoints to look at."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service, model_name(service), owner, "model"),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(service, "model"),
            "ports": [{"name": "http", "port": service.spec.port, "targetPort": "http", "protocol": "TCP"}],
            "publishNotReadyAddresses": False,
        },
    }


# The gateway


def gateway_args(service: GpuInferenceService) -> list[str]:
    """`gpuscale gateway` flags. Flags, not GPUSCALE_GATEWAY_* variables: they win over anything the
    environment holds and show in `kubectl describe`."""
    spec = service.spec
    gateway = spec.gateway
    return [
        "--host=0.0.0.0",
        f"--port={GATEWAY_PORT}",
        "--admin-host=0.0.0.0",
        f"--admin-port={GATEWAY_ADMIN_PORT}",
        f"--max-queue={gateway.max_queue}",
        f"--queue-timeout-seconds={_number(gateway.queue_timeout_seconds)}",
        f"--prefetch={gateway.prefetch}",
        f"--slots={spec.slots_per_replica}",
        f"--drain-seconds={_number(gateway_drain_seconds(service))}",
        "--discovery=kubernetes",
        f"--kube-namespace={service.metadata.namespace}",
        f"--kube-selector={label_selector(service, 'model')}",
        f"--kube-port={spec.port}",
    ]


def build_gateway_deployment(
    service: GpuInferenceService, owner: Mapping[str, Any], gateway_image: str = DEFAULT_GATEWAY_IMAGE
) -> Manifest:
    container: Manifest = {
        "name": GATEWAY_CONTAINER,
        "image": gateway_image,
        "command": ["gpuscale", "gateway"],
        "args": gateway_args(service),
        "ports": [
            {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": GATEWAY_ADMIN_PORT, "protocol": "TCP"},
        ],
        # Both on the admin port: /readyz turns 503 while draining, /healthz stays 200.
        "readinessProbe": _http_probe(GATEWAY_READYZ, "admin", 2, 2, 2),
        "livenessProbe": _http_probe(GATEWAY_HEALTHZ, "admin", 10, 5, 6, initial_delay=5),
        "lifecycle": _pre_stop(),
        # Requests only: a CPU limit would throttle every request's path, and a memory limit would let
        # the OOM killer take the whole queue at once.
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": _container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(service, gateway_name(service), owner, "gateway"),
        "spec": {
            # One queue is the point: two gateways would each hand out the same replicas' slots.
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(service, "gateway")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(service, "gateway")},
                "spec": {
                    "serviceAccountName": gateway_name(service),
                    "containers": [container],
                    # A Service named `gpuscale-gateway` would inject GPUSCALE_GATEWAY_PORT=tcp://...
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": gateway_grace_seconds(service),
                    "securityContext": _pod_security_context(),
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def build_gateway_service(service: GpuInferenceService, owner: Mapping[str, Any]) -> Manifest:
    """`<name>`, the address clients use; the admin port is where the operator reads the queue."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service, service.name, owner, "gateway"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(service, "gateway"),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "admin", "port": GATEWAY_ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"},
            ],
        },
    }


def build_direct_service(service: GpuInferenceService, owner: Mapping[str, Any]) -> Manifest:
    """`<name>` without a gateway: kube-proxy spreads requests over the ready model pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service, service.name, owner, "model"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(service, "model"),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_gateway_rbac(service: GpuInferenceService, owner: Mapping[str, Any]) -> list[Manifest]:
    """The gateway's identity: it watches the model pods (readiness and deletion show there first;
    EndpointSlices lag, and a real API server refuses loopback addresses in them)."""
    name = gateway_name(service)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(service, name, owner, "gateway"),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(service, name, owner, "gateway"),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(service, name, owner, "gateway"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": service.metadata.namespace}],
        },
    ]


def build_owned(
    service: GpuInferenceService,
    owner: Mapping[str, Any],
    replicas: int,
    gateway_image: str = DEFAULT_GATEWAY_IMAGE,
) -> list[Manifest]:
    """Everything the service owns, in apply order: identities, then Services, then Deployments (so a
    pod never starts before what it needs exists)."""
    if not service.spec.gateway.enabled:
        return [
            build_model_service(service, owner),
            build_direct_service(service, owner),
            build_model_deployment(service, owner, replicas),
        ]
    return [
        *build_gateway_rbac(service, owner),
        build_model_service(service, owner),
        build_gateway_service(service, owner),
        build_model_deployment(service, owner, replicas),
        build_gateway_deployment(service, owner, gateway_image),
    ]
