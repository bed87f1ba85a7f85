"""The objects the operator owns: official schemas of several Kubernetes versions, the restricted Pod
Security Standard, and agreement with what the pod server and the gateway actually read."""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from gpuscale.kube import objects
from gpuscale.kube.objects import (
    DELETION_COST,
    GPU_RESOURCE,
    SPEC_ENV,
    TemplateError,
    build_gateway_deployment,
    build_gateway_rbac,
    build_gateway_service,
    build_model_deployment,
    build_model_service,
    build_owned,
    label_selector,
    labels,
    owner_reference,
    selector_labels,
    unknown_template_keys,
)
from gpuscale.spec import GpuInferenceService, load_service, parse_service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuscale_gateway import admin
from gpuscale_gateway.cli import build_parser as gateway_parser
from gpuscale_gateway.settings import GatewaySettings
from inference_app.cli import given_settings
from inference_app.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# The oldest schema here that is still in use, a middle one, and the newest: the `exec` preStop and
# every field used must be valid on all of them.
VERSIONS = ("1.29", "1.30", "1.33", "1.36", kubernetes_validate.latest_version())
CR_UID = "6f1c9d3e-3c1b-4b8e-9f57-0d5a0b7c2f11"


def manifest(name: str = "sdxl", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": "registry.example.com/sdxl:1.4", **spec},
    }


def cr_body(service: GpuInferenceService) -> dict[str, Any]:
    body = service.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["metadata"]["uid"] = CR_UID
    return body


def owner_of(service: GpuInferenceService) -> dict[str, Any]:
    return owner_reference(cr_body(service))


GPU_SERVICE = parse_service(
    manifest(
        gpusPerReplica=2,
        slotsPerReplica=1,
        maxRequestSeconds=300.5,
        template={
            "env": [
                {"name": "MODEL_ID", "value": "stabilityai/sdxl"},
                {"name": "GPUSCALE_MODEL", "value": "sleep"},
            ],
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "runtimeClassName": "nvidia",
            "priorityClassName": "inference",
            "resources": {"requests": {"cpu": "4", "memory": "32Gi"}, "limits": {"memory": "32Gi"}},
            "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": "sdxl-weights"}}],
            "volumeMounts": [{"name": "weights", "mountPath": "/models", "readOnly": True}],
            "labels": {"team": "imaging"},
            "annotations": {"example.com/owner": "imaging"},
        },
    )
)  # fmt: skip
SLEEP_SERVICE = load_service(ROOT / "examples" / "sleep.yaml")
NO_GATEWAY = parse_service(manifest(name="direct", gateway={"enabled": False}))


def services() -> list[tuple[str, GpuInferenceService]]:
    found = [(path.name, load_service(path)) for path in EXAMPLES]
    return [*found, ("gpu", GPU_SERVICE), ("no-gateway", NO_GATEWAY)]


SERVICES = services()
SERVICE_IDS = [name for name, _ in SERVICES]


def all_objects(service: GpuInferenceService, replicas: int = 2) -> list[dict[str, Any]]:
    return build_owned(service, owner_of(service), replicas, "registry.example.com/gpuscale-operator:0.1.0")


def by_kind_name(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def pod_templates(objs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objs:
        if obj["kind"] == "Deployment":
            yield obj["spec"]["template"]


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(deployment: Mapping[str, Any]) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container(deployment)["env"]}


# The restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
# baseline checks included, as the pod-security admission controller applies them to a pod template.

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def restricted_violations(template: Mapping[str, Any]) -> list[str]:
    spec = template["spec"]
    pod_sc = spec.get("securityContext") or {}
    problems: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"spec.{key} is true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {volume['name']} is a hostPath")
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(kinds)}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as uid 0")
    containers = [
        *spec.get("initContainers", []),
        *spec["containers"],
        *spec.get("ephemeralContainers", []),
    ]
    for c in containers:
        name = c["name"]
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        added = set(capabilities.get("add") or [])
        if not added <= {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {sorted(added)}")
        if not added <= BASELINE_CAPABILITIES:
            problems.append(f"{name}: adds capabilities beyond baseline {sorted(added)}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {sc['procMount']}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{name}: hostProcess")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def test_the_checker_catches_what_restricted_forbids() -> None:
    template = copy.deepcopy(
        build_model_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), 1)["spec"]["template"]
    )
    assert restricted_violations(template) == []
    spec = template["spec"]
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    del spec["securityContext"]["runAsNonRoot"]
    c = spec["containers"][0]
    c["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    c["ports"][0]["hostPort"] = 80
    problems = " | ".join(restricted_violations(template))
    for expected in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile is Unconfined",
        "drop ALL",
        "SYS_ADMIN",
        "hostPort",
    ):
        assert expected in problems


# Schemas and security


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("_name", "service"), SERVICES, ids=SERVICE_IDS)
def test_every_object_validates_against_the_official_schema(
    _name: str, service: GpuInferenceService, version: str
) -> None:
    for obj in all_objects(service):
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize(("_name", "service"), SERVICES, ids=SERVICE_IDS)
def test_pod_templates_meet_the_restricted_pod_security_standard(
    _name: str, service: GpuInferenceService
) -> None:
    templates = list(pod_templates(all_objects(service)))
    assert len(templates) == (2 if service.spec.gateway.enabled else 1)
    for template in templates:
        assert restricted_violations(template) == []


@pytest.mark.parametrize(("_name", "service"), SERVICES, ids=SERVICE_IDS)
def test_every_object_is_owned_by_the_resource_and_lives_in_its_namespace(
    _name: str, service: GpuInferenceService
) -> None:
    expected = {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "name": service.name,
        "uid": CR_UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for obj in all_objects(service):
        assert obj["metadata"]["ownerReferences"] == [expected]
        assert obj["metadata"]["namespace"] == service.metadata.namespace
        assert obj["metadata"]["labels"] | labels(service) == obj["metadata"]["labels"]


def test_owner_reference_reads_the_cr_body() -> None:
    body = {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "7"},
        "spec": {},
    }
    assert owner_reference(body) == {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "name": "a",
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
    }


# Names, labels and selectors


def test_labels() -> None:
    assert labels(SLEEP_SERVICE, "model") == {
        "app.kubernetes.io/name": "gpuscale",
        "app.kubernetes.io/instance": "sleep",
        "app.kubernetes.io/component": "model",
        "app.kubernetes.io/managed-by": "gpuscale-operator",
        "gpuscale.io/service": "sleep",
    }
    assert selector_labels(SLEEP_SERVICE, "gateway") == {
        "app.kubernetes.io/name": "gpuscale",
        "app.kubernetes.io/instance": "sleep",
        "app.kubernetes.io/component": "gateway",
    }
    assert label_selector(SLEEP_SERVICE) == (
        "app.kubernetes.io/name=gpuscale,app.kubernetes.io/instance=sleep,app.kubernetes.io/component=model"
    )


@pytest.mark.parametrize(("_name", "service"), SERVICES, ids=SERVICE_IDS)
def test_selectors_pick_exactly_their_component_pods(_name: str, service: GpuInferenceService) -> None:
    objs = all_objects(service)
    pods = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objs
        if o["kind"] == "Deployment"
    }
    for obj in objs:
        if obj["kind"] == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        elif obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
            component = selector["app.kubernetes.io/component"]
        else:
            continue
        chosen = [c for c, pod_labels in pods.items() if selector.items() <= pod_labels.items()]
        assert chosen == [component], obj["metadata"]["name"]


def test_user_labels_cannot_move_a_pod_out_of_its_selector() -> None:
    service = parse_service(
        manifest(
            template={"labels": {"app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "x"}}
        )
    )
    deployment = build_model_deployment(service, owner_of(service), 1)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_names_fit_for_the_longest_resource_name() -> None:
    service = parse_service(manifest(name="a" * 52))
    for obj in all_objects(service):
        assert len(obj["metadata"]["name"]) <= 63
    assert {o["metadata"]["name"] for o in all_objects(service)} == {
        "a" * 52,
        "a" * 52 + "-model",
        "a" * 52 + "-gateway",
    }


# The model Deployment


@pytest.mark.parametrize("gpus", [0, 1, 4, 16])
def test_gpus_are_requested_and_limited_only_when_asked_for(gpus: int) -> None:
    service = parse_service(manifest(gpusPerReplica=gpus))
    resources = container(build_model_deployment(service, owner_of(service), 1)).get("resources", {})
    if gpus == 0:
        assert GPU_RESOURCE not in resources.get("limits", {})
        assert GPU_RESOURCE not in resources.get("requests", {})
    else:
        assert resources["limits"][GPU_RESOURCE] == str(gpus)
        assert resources["requests"][GPU_RESOURCE] == str(gpus)


def test_gpu_count_comes_from_the_spec_and_other_resources_from_the_template() -> None:
    service = parse_service(
        manifest(
            gpusPerReplica=1,
            template={
                "resources": {"limits": {GPU_RESOURCE: "8", "memory": "16Gi"}, "requests": {"cpu": "2"}}
            },
        )
    )
    resources = container(build_model_deployment(service, owner_of(service), 1))["resources"]
    assert resources == {
        "requests": {"cpu": "2", GPU_RESOURCE: "1"},
        "limits": {"memory": "16Gi", GPU_RESOURCE: "1"},
    }
    cpu_only = parse_service(
        manifest(gpusPerReplica=0, template={"resources": {"limits": {GPU_RESOURCE: "1"}}})
    )
    assert "resources" not in container(build_model_deployment(cpu_only, owner_of(cpu_only), 1))


def test_model_deployment_shape() -> None:
    deployment = build_model_deployment(GPU_SERVICE, owner_of(GPU_SERVICE), 3)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    c = container(deployment)
    assert deployment["metadata"]["name"] == "sdxl-model"
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert c["name"] == "model"
    assert c["image"] == "registry.example.com/sdxl:1.4"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "command" not in c  # the image's own entrypoint: one server process, no worker flag
    assert pod["enableServiceLinks"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(objects.PRE_STOP_SECONDS)]}}
    # The operator annotates pods at runtime; an applied template must never carry (and so reset) it.
    assert DELETION_COST not in spec["template"]["metadata"].get("annotations", {})


def test_probes() -> None:
    c = container(build_model_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), 1))
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # slow model loads
    # The liveness probe tolerates a pod that is briefly slow to answer.
    liveness = c["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


@pytest.mark.parametrize(
    ("seconds", "grace"), [(60, 90), (0.5, 31), (900, 930), (300.5, 331), (86400, 86430)]
)
def test_termination_grace_covers_the_prestop_the_drain_and_the_longest_request(
    seconds: float, grace: int
) -> None:
    service = parse_service(manifest(maxRequestSeconds=seconds))
    deployment = build_model_deployment(service, owner_of(service), 1)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace
    drain = float(env_of(deployment)["GPUSCALE_DRAIN_SECONDS"])
    assert drain >= seconds
    assert objects.PRE_STOP_SECONDS + drain < grace


def test_spec_env_names_are_the_pod_servers_settings() -> None:
    prefix = ServerSettings.model_config.get("env_prefix")
    assert prefix == "GPUSCALE_"
    fields = {f"{prefix}{name.upper()}" for name in ServerSettings.model_fields}
    assert set(SPEC_ENV) <= fields
    deployment = build_model_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), 1)
    assert set(SPEC_ENV) <= set(env_of(deployment))


@pytest.mark.parametrize(("_name", "service"), SERVICES, ids=SERVICE_IDS)
def test_the_pod_server_reads_the_env_as_meant(
    _name: str, service: GpuInferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(build_model_deployment(service, owner_of(service), 1))
    for name in [n for n in os.environ if n.startswith("GPUSCALE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("GPUSCALE_"):
            monkeypatch.setenv(name, value)
    server = ServerSettings()
    spec = service.spec
    assert (server.host, server.port, server.slots) == ("0.0.0.0", spec.port, spec.slots_per_replica)
    assert server.max_request_seconds == spec.max_request_seconds
    assert server.drain_seconds == spec.max_request_seconds + objects.DRAIN_SLACK_SECONDS


def test_template_env_passes_through_after_the_spec_env_and_cannot_override_it() -> None:
    service = parse_service(
        manifest(
            port=9000,
            template={
                "env": [
                    {"name": "B", "value": "1"},
                    {"name": "GPUSCALE_PORT", "value": "1234"},
                    {"name": "A", "value": "x"},
                    {"name": "B", "value": "2"},
                    {"name": "GPUSCALE_MODEL", "value": "matmul"},
                ]
            },
        )
    )
    env = container(build_model_deployment(service, owner_of(service), 1))["env"]
    names = [var["name"] for var in env]
    assert names == [*SPEC_ENV, "A", "B", "GPUSCALE_MODEL"]
    assert len(set(names)) == len(names)
    values = {var["name"]: var["value"] for var in env}
    assert (values["GPUSCALE_PORT"], values["B"], values["GPUSCALE_MODEL"]) == ("9000", "2", "matmul")


def test_template_overrides_reach_the_pod() -> None:
    deployment = build_model_deployment(GPU_SERVICE, owner_of(GPU_SERVICE), 1)
    template = deployment["spec"]["template"]
    pod = template["spec"]
    c = container(deployment)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "inference")
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "dshm", "weights"]  # dshm: more than one GPU
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp", "/dev/shm", "/models"]
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "32Gi", GPU_RESOURCE: "2"}
    assert template["metadata"]["labels"]["team"] == "imaging"
    assert template["metadata"]["annotations"]["example.com/owner"] == "imaging"
    assert unknown_template_keys(GPU_SERVICE) == []


def test_template_may_replace_probes_command_and_security_settings() -> None:
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
    service = parse_service(
        manifest(
            template={
                "command": ["vllm", "serve"],
                "args": ["--port", "8000"],
                "readinessProbe": probe,
                "containerSecurityContext": {"readOnlyRootFilesystem": False},
                "securityContext": {"fsGroup": 2000},
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                "automountServiceAccountToken": True,
                "bogus": 1,
            }
        )
    )
    deployment = build_model_deployment(service, owner_of(service), 1)
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert (c["command"], c["args"], c["readinessProbe"]) == (["vllm", "serve"], ["--port", "8000"], probe)
    assert c["securityContext"]["readOnlyRootFilesystem"] is False
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["fsGroup"] == 2000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert pod["automountServiceAccountToken"] is True
    assert unknown_template_keys(service) == ["bogus"]
    for version in VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize(
    "template",
    [
        {"nodeSelector": {"a": "b"}, "securityContext": ["x"]},
        {"resources": {"limits": "lots"}},
        {"volumes": [{"emptyDir": {}}]},
        {"volumeMounts": {"name": "x"}},
        {"labels": "x"},
    ],
)
def test_template_of_the_wrong_shape_is_refused(template: dict[str, Any]) -> None:
    service = parse_service(manifest(template=template))
    with pytest.raises(TemplateError, match=r"spec\.template\."):
        build_model_deployment(service, owner_of(service), 1)


def test_builders_are_pure() -> None:
    before = GPU_SERVICE.model_dump()
    first = all_objects(GPU_SERVICE)
    model = by_kind_name(first)[("Deployment", "sdxl-model")]["spec"]["template"]["spec"]
    model["volumes"].clear()
    model["nodeSelector"]["x"] = "y"
    model["tolerations"].clear()
    for obj in first:
        obj["metadata"]["labels"].clear()
    assert all_objects(GPU_SERVICE) == all_objects(GPU_SERVICE)
    assert GPU_SERVICE.model_dump() == before
    assert all_objects(GPU_SERVICE)[0]["metadata"]["labels"]


def test_negative_replicas_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas"):
        build_model_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), -1)


def test_zero_replicas_is_scaled_to_zero() -> None:
    assert build_model_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), 0)["spec"]["replicas"] == 0


def test_model_service_is_headless_over_ready_pods() -> None:
    svc = build_model_service(GPU_SERVICE, owner_of(GPU_SERVICE))
    assert svc["metadata"]["name"] == "sdxl-model"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is False
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == selector_labels(GPU_SERVICE, "model")


# The gateway


def gateway_settings(service: GpuInferenceService) -> GatewaySettings:
    """What the gateway makes of the Deployment's command line, through its own parser."""
    deployment = build_gateway_deployment(service, owner_of(service), "img")
    c = container(deployment)
    assert c["command"] == ["gpuscale", "gateway"]
    args = gateway_parser().parse_args(c["args"])
    return GatewaySettings(**given_settings(args, GatewaySettings))


@pytest.mark.parametrize(
    ("_name", "service"),
    [s for s in SERVICES if s[1].spec.gateway.enabled],
    ids=[name for name, s in SERVICES if s.spec.gateway.enabled],
)
def test_gateway_flags_mean_what_the_spec_says(_name: str, service: GpuInferenceService) -> None:
    gateway = gateway_settings(service)
    spec = service.spec
    assert (gateway.host, gateway.admin_host) == ("0.0.0.0", "0.0.0.0")
    assert (gateway.port, gateway.admin_port) == (objects.GATEWAY_PORT, objects.GATEWAY_ADMIN_PORT)
    assert gateway.max_queue == spec.gateway.max_queue
    assert gateway.queue_timeout_seconds == spec.gateway.queue_timeout_seconds
    assert gateway.prefetch == spec.gateway.prefetch
    assert gateway.slots == spec.slots_per_replica
    assert gateway.discovery == "kubernetes"
    assert gateway.kube_namespace == service.metadata.namespace
    assert gateway.kube_selector == label_selector(service, "model")
    assert gateway.kube_port == spec.port


@pytest.mark.parametrize(
    ("queue_timeout", "max_request", "drain"), [(120, 60, 180), (900, 900, 1800), (86400, 900, 3600)]
)
def test_gateway_drains_within_its_grace(queue_timeout: float, max_request: float, drain: float) -> None:
    service = parse_service(
        manifest(maxRequestSeconds=max_request, gateway={"queueTimeoutSeconds": queue_timeout})
    )
    gateway = gateway_settings(service)
    assert gateway.drain_seconds == drain
    grace = build_gateway_deployment(service, owner_of(service))["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert objects.PRE_STOP_SECONDS + gateway.drain_seconds < grace <= objects.GATEWAY_MAX_DRAIN_SECONDS + 60


def test_gateway_deployment_shape() -> None:
    deployment = build_gateway_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE), "registry/op:1")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert deployment["metadata"]["name"] == "sleep-gateway"
    assert deployment["spec"]["replicas"] == 1
    assert c["image"] == "registry/op:1"
    assert pod["serviceAccountName"] == "sleep-gateway"
    assert pod["enableServiceLinks"] is False
    assert "automountServiceAccountToken" not in pod  # it watches pods with the account's token
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "admin": 8081}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert "limits" not in c["resources"]
    assert (
        build_gateway_deployment(SLEEP_SERVICE, owner_of(SLEEP_SERVICE))["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == objects.DEFAULT_GATEWAY_IMAGE
    )


def test_gateway_probe_paths_are_served_by_the_admin_port() -> None:
    source = inspect.getsource(admin.Admin.__call__)
    for path in (objects.GATEWAY_HEALTHZ, objects.GATEWAY_READYZ):
        assert f'path == "{path}"' in source


def test_gateway_service_is_what_clients_and_the_operator_use() -> None:
    svc = build_gateway_service(SLEEP_SERVICE, owner_of(SLEEP_SERVICE))
    assert svc["metadata"]["name"] == "sleep"
    assert svc["spec"]["selector"] == selector_labels(SLEEP_SERVICE, "gateway")
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "admin", "port": 8081, "targetPort": "admin", "protocol": "TCP"},
    ]


def test_gateway_may_only_read_pods() -> None:
    account, role, binding = build_gateway_rbac(SLEEP_SERVICE, owner_of(SLEEP_SERVICE))
    assert (account["kind"], role["kind"], binding["kind"]) == ("ServiceAccount", "Role", "RoleBinding")
    assert {account["metadata"]["name"], role["metadata"]["name"], binding["metadata"]["name"]} == {
        "sleep-gateway"
    }
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "sleep-gateway",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sleep-gateway", "namespace": "default"}
    ]


# Everything together


def test_build_owned_in_apply_order() -> None:
    kinds = [(o["kind"], o["metadata"]["name"]) for o in all_objects(GPU_SERVICE)]
    assert kinds == [
        ("ServiceAccount", "sdxl-gateway"),
        ("Role", "sdxl-gateway"),
        ("RoleBinding", "sdxl-gateway"),
        ("Service", "sdxl-model"),
        ("Service", "sdxl"),
        ("Deployment", "sdxl-model"),
        ("Deployment", "sdxl-gateway"),
    ]


def test_without_the_gateway_the_service_selects_the_model_pods() -> None:
    objs = by_kind_name(all_objects(NO_GATEWAY))
    assert set(objs) == {("Service", "direct-model"), ("Service", "direct"), ("Deployment", "direct-model")}
    svc = objs[("Service", "direct")]
    assert svc["spec"]["selector"] == selector_labels(NO_GATEWAY, "model")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = objs[("Deployment", "direct-model")]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


# Any valid spec


NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?", fullmatch=True)
ENV_NAMES = st.from_regex(r"[-._a-zA-Z][-._a-zA-Z0-9]{0,30}", fullmatch=True)
SECONDS = st.one_of(
    st.integers(1, 86400).map(float),
    st.floats(0.001, 86400, allow_nan=False, allow_infinity=False),
)


@st.composite
def any_service(draw: st.DrawFn) -> GpuInferenceService:
    env = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": st.one_of(ENV_NAMES, st.sampled_from(SPEC_ENV)), "value": st.text()}
            ),
            max_size=6,
        )
    )
    return parse_service(
        manifest(
            name=draw(NAMES),
            namespace=draw(NAMES),
            port=draw(st.integers(1, 65535)),
            gpusPerReplica=draw(st.integers(0, 16)),
            slotsPerReplica=draw(st.integers(1, 64)),
            maxRequestSeconds=draw(SECONDS),
            template={"env": env},
            gateway={
                "enabled": draw(st.booleans()),
                "maxQueue": draw(st.integers(0, 1_000_000)),
                "queueTimeoutSeconds": draw(SECONDS),
                "prefetch": draw(st.integers(0, 1)),
            },
        )
    )


# Three schema versions, not all five: each validation costs milliseconds, and the examples multiply it.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service=any_service(), replicas=st.integers(0, 1000))
def test_any_valid_spec_builds_valid_restricted_objects(service: GpuInferenceService, replicas: int) -> None:
    objs = all_objects(service, replicas)
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63
        for version in VERSIONS[::2]:
            kubernetes_validate.validate(obj, version, strict=True)
    for template in pod_templates(objs):
        assert restricted_violations(template) == []
    model = by_kind_name(objs)[("Deployment", f"{service.name}-model")]
    assert model["spec"]["replicas"] == replicas
    pod = model["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= math.ceil(service.spec.max_request_seconds) + 30
    env = env_of(model)
    assert env["GPUSCALE_PORT"] == str(service.spec.port)
    assert float(env["GPUSCALE_MAX_REQUEST_SECONDS"]) == service.spec.max_request_seconds
    names = [var["name"] for var in container(model)["env"]]
    assert len(names) == len(set(names))
    user = {var.name for var in service.spec.template.env} - set(SPEC_ENV)
    assert user <= set(names)
    limits = container(model).get("resources", {}).get("limits", {})
    assert (GPU_RESOURCE in limits) == (service.spec.gpus_per_replica > 0)
    if service.spec.gateway.enabled:
        gateway = gateway_settings(service)
        grace = by_kind_name(objs)[("Deployment", f"{service.name}-gateway")]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        assert gateway.drain_seconds + objects.PRE_STOP_SECONDS < grace
