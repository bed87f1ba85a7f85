"""The Helm chart (charts/gpuscale), rendered by the real helm over several value sets: lint, the official
schemas of several Kubernetes versions, the operator's evidence-derived RBAC, the restricted Pod Security
Standard, the operator's real command line, the CRD copy, values.schema.json, NOTES.txt and the keep policy.
The objects the operator itself builds are checked in tests/unit/test_kube_objects.py, not here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from gpuscale import __version__
from gpuscale.cli import build_parser
from gpuscale.kube.objects import DEFAULT_GATEWAY_IMAGE, SERVICE_LABEL, build_owned
from gpuscale.spec import load_service
from kubernetes_validate.utils import SchemaNotFoundError

import tests.chart.helm
from tests.chart.helm import (
    CHART,
    NAMESPACE,
    ROOT,
    VALUE_SETS,
    Obj,
    helm,
    of_kind,
    one,
    pod_templates,
    render,
    require_helm,
)
from tests.operator.test_rbac import CLUSTER_ROLE_FILE, ROLE_FILE, bound_to_the_operator, granted
from tests.unit.test_kube_objects import VERSIONS, restricted_violations

SETS = list(VALUE_SETS)
CRD_SOURCE = ROOT / "crds" / "gpuinferenceservices.gpuscale.io.yaml"
CRD_COPY = CHART / "files" / "gpuinferenceservices.gpuscale.io.yaml"
KEEP = "helm.sh/resource-policy"
# The Prometheus Operator's kinds have no official schema (their CRDs come with it): only these go
# unvalidated, and only in this API version.
PROMETHEUS_OPERATOR = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def validate(obj: Obj, version: str) -> bool:
    """Validate against the official schema of `version`, strictly (unknown fields fail). A kind or API
    version that Kubernetes removed has no schema there: SchemaNotFoundError. False: not validated (the
    Prometheus Operator's kinds)."""
    if (obj["apiVersion"], obj["kind"]) in PROMETHEUS_OPERATOR:
        return False
    kubernetes_validate.validate(obj, version, strict=True)
    return True


def deployment_of(objs: list[Obj]) -> Obj:
    return one(objs, "Deployment")


def container_of(objs: list[Obj]) -> Obj:
    (container,) = deployment_of(objs)["spec"]["template"]["spec"]["containers"]
    result: Obj = container
    return result


# --- helm's own checks --------------------------------------------------------------------------------------


def test_a_missing_helm_fails_the_tests_and_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tests.chart.helm, "HELM", tmp_path / "helm")
    with pytest.raises(pytest.fail.Exception, match="run `make test`"):
        require_helm()


def test_helm_lint_strict_passes() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("name", SETS)
def test_helm_lint_strict_passes_with_each_value_set(name: str) -> None:
    done = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=VALUE_SETS[name])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("metrics.port=http", "at '/metrics/port': got string, want integer"),
        ("crds.install=maybe", "at '/crds/install': got string, want boolean"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("watchNamespaces=ml", "at '/watchNamespaces': got string, want array"),
        ("watchNamespaces={team-*}", "'team-*' does not match pattern"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
    ],
)
def test_the_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    done = helm("template", "gpuscale", str(CHART), "--set", setting)
    assert done.returncode != 0, f"--set {setting} rendered"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr


# --- official schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", SETS)
def test_every_rendered_object_is_valid_on_each_kubernetes_version(name: str, version: str) -> None:
    unvalidated = {(o["apiVersion"], o["kind"]) for o in render(name) if not validate(o, version)}
    values = VALUE_SETS[name]
    monitored = any(values.get(key, {}).get("enabled") for key in ("serviceMonitor", "podMonitor"))
    assert unvalidated <= PROMETHEUS_OPERATOR
    assert bool(unvalidated) == monitored


# API versions Kubernetes has removed (each was served once; a chart still using one fails to install),
# each with the version that replaced it where the same kind lives on, which the same check accepts.
REMOVED: list[tuple[str, str, str | None]] = [
    ("policy/v1beta1", "PodDisruptionBudget", "policy/v1"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition", "apiextensions.k8s.io/v1"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("rbac.authorization.k8s.io/v1beta1", "RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("networking.k8s.io/v1beta1", "Ingress", "networking.k8s.io/v1"),
    ("extensions/v1beta1", "Deployment", "apps/v1"),
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler", "autoscaling/v2"),
    ("batch/v1beta1", "CronJob", "batch/v1"),
    ("policy/v1beta1", "PodSecurityPolicy", None),
    ("flowcontrol.apiserver.k8s.io/v1beta2", "FlowSchema", "flowcontrol.apiserver.k8s.io/v1"),
]


def has_schema(obj: Obj, version: str) -> bool:
    """Whether the check knows the object's kind and API version on `version`: a minimal object may
    still be invalid (required fields missing), which is not what is asked here."""
    try:
        validate(obj, version)
    except SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        pass
    return True


@pytest.mark.parametrize(
    ("api_version", "kind", "replacement"), REMOVED, ids=[f"{r[0]}-{r[1]}" for r in REMOVED]
)
def test_the_schema_check_rejects_removed_api_versions(
    api_version: str, kind: str, replacement: str | None
) -> None:
    obj: Obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    for version in VERSIONS:
        with pytest.raises(SchemaNotFoundError):
            validate(obj, version)
        # The kind itself passes where it lives on: the removed version is what fails.
        assert replacement is None or has_schema({**obj, "apiVersion": replacement}, version)


def test_the_chart_renders_a_template_of_a_removed_api_version_into_a_failure(tmp_path: Path) -> None:
    """The check catches a removed version in the chart itself: a copy of the chart with its PDB on
    policy/v1beta1 renders, and validation fails on it."""
    copy = Path(shutil.copytree(CHART, tmp_path / "gpuscale"))
    pdb = copy / "templates" / "pdb.yaml"
    pdb.write_text(pdb.read_text().replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n"))
    done = helm("template", "gpuscale", str(copy), "--set", "podDisruptionBudget.enabled=true")
    assert done.returncode == 0, done.stderr
    (old,) = [o for o in yaml.safe_load_all(done.stdout) if o and o["kind"] == "PodDisruptionBudget"]
    assert old["apiVersion"] == "policy/v1beta1"
    with pytest.raises(SchemaNotFoundError):
        validate(old, VERSIONS[0])


# --- RBAC ---------------------------------------------------------------------------------------------------


def rbac_file(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_cluster_wide_rbac_is_deploy_rbac_clusterrole() -> None:
    objs = render("defaults")
    (shipped,) = of_kind(rbac_file(CLUSTER_ROLE_FILE), "ClusterRole")
    role = one(objs, "ClusterRole")
    assert granted(role["rules"]) == granted(shipped["rules"])
    assert not of_kind(objs, "Role")
    assert not of_kind(objs, "RoleBinding")
    account = one(objs, "ServiceAccount")
    assert account["metadata"]["namespace"] == NAMESPACE
    bound_to_the_operator([account, one(objs, "ClusterRoleBinding")], "ClusterRoleBinding", role)
    assert (
        deployment_of(objs)["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    )


def test_namespaced_rbac_is_deploy_rbac_role_in_each_watched_namespace() -> None:
    objs = render("namespaces")
    shipped = rbac_file(ROLE_FILE)
    (shipped_role,) = of_kind(shipped, "Role")
    (shipped_reads,) = of_kind(shipped, "ClusterRole")
    account = one(objs, "ServiceAccount")
    roles = of_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    for role in roles:
        assert granted(role["rules"]) == granted(shipped_role["rules"])
        in_namespace = [
            b
            for b in of_kind(objs, "RoleBinding")
            if b["metadata"]["namespace"] == role["metadata"]["namespace"]
        ]
        bound_to_the_operator([account, *in_namespace], "RoleBinding", role)
    # Cluster-wide, only the reads kopf needs: nothing that lets it touch other namespaces' objects.
    reads = one(objs, "ClusterRole")
    assert granted(reads["rules"]) == granted(shipped_reads["rules"])
    bound_to_the_operator([account, one(objs, "ClusterRoleBinding")], "ClusterRoleBinding", reads)


def test_without_rbac_the_chart_creates_no_roles_and_uses_the_named_account() -> None:
    objs = render("no-rbac")
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert deployment_of(objs)["spec"]["template"]["spec"]["serviceAccountName"] == "ops-operator"


# --- the operator's pod -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_every_pod_template_meets_the_restricted_pod_security_standard(name: str) -> None:
    templates = pod_templates(render(name))
    assert len(templates) == 1
    for template in templates:
        assert restricted_violations(template) == []
        spec = template["spec"]
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, "a writable /tmp on a read-only root"


def test_the_restricted_check_sees_a_chart_pod_that_breaks_it() -> None:
    (template,) = pod_templates(render("defaults"))
    del template["spec"]["securityContext"]["seccompProfile"]
    template["spec"]["containers"][0]["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    problems = " | ".join(restricted_violations(template))
    assert "seccompProfile is None" in problems
    assert "drop ALL" in problems
    assert "NET_ADMIN" in problems


def operator_args(objs: list[Obj]) -> Any:
    """The container's command line, parsed by the real `gpuscale` CLI (a flag it lacks fails here)."""
    container = container_of(objs)
    assert container["command"][0] == "gpuscale"
    return build_parser().parse_args([*container["command"][1:], *container["args"]])


def test_the_operator_runs_once_cluster_wide_by_default() -> None:
    objs = render("defaults")
    deployment = deployment_of(objs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = operator_args(objs)
    assert args.command == "operator"
    assert args.all_namespaces is True
    assert args.namespace == []
    assert args.verbose is False
    # The chart's default image is the one the operator gives the gateway by default, of this release.
    container = container_of(objs)
    assert container["image"] == DEFAULT_GATEWAY_IMAGE == f"gpuscale-operator:{__version__}"
    assert args.gateway_image == container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_operator_watches_the_named_namespaces() -> None:
    args = operator_args(render("namespaces"))
    assert args.all_namespaces is False
    assert args.namespace == ["a", "b"]


def test_the_ports_and_the_probe_are_the_ones_the_operator_serves() -> None:
    objs = render("defaults")
    args = operator_args(objs)
    container = container_of(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == args.metrics_port == 8080
    liveness = urlsplit(args.liveness)
    probe = container["livenessProbe"]["httpGet"]
    assert (ports[probe["port"]], probe["path"]) == (liveness.port, liveness.path) == (8081, "/healthz")
    service = one(objs, "Service")
    assert (
        service["spec"]["selector"].items()
        <= deployment_of(objs)["spec"]["template"]["metadata"]["labels"].items()
    )
    (service_port,) = service["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (8080, "metrics")


def test_every_value_reaches_the_operator_pod() -> None:
    objs = render("everything")
    values = VALUE_SETS["everything"]
    args = operator_args(objs)
    assert args.verbose is True
    assert args.gateway_image == "registry.example.com/gpuscale-gateway:0.1.1"
    container = container_of(objs)
    assert container["image"] == f"registry.example.com/gpuscale-operator:{__version__}"
    assert container["imagePullPolicy"] == "Always"
    pod = deployment_of(objs)["spec"]["template"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName"):
        assert pod["spec"][key] == values[key]
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    assert pod["metadata"]["labels"].items() >= values["podLabels"].items()
    assert one(objs, "ServiceAccount")["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
    assert container["resources"] == yaml.safe_load((CHART / "values.yaml").read_text())["resources"]


def test_the_gateway_image_alone_takes_the_operators_tag() -> None:
    done = helm(
        "template", "gpuscale", str(CHART), "--set", "gatewayImage.repository=gw", "--set", "image.tag=2.0"
    )
    assert done.returncode == 0, done.stderr
    objs = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert operator_args(objs).gateway_image == "gw:2.0"
    assert container_of(objs)["image"] == "gpuscale-operator:2.0"


def test_the_disruption_budget_covers_the_operator_pod() -> None:
    objs = render("everything")
    budget = one(objs, "PodDisruptionBudget")
    labels = deployment_of(objs)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1
    assert not of_kind(render("defaults"), "PodDisruptionBudget")


# --- monitoring ---------------------------------------------------------------------------------------------


def test_the_service_monitor_scrapes_the_metrics_service() -> None:
    objs = render("everything")
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True  # the per-service gauges keep the service's namespace
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not of_kind(render("defaults"), "ServiceMonitor")


@pytest.mark.parametrize(
    ("name", "namespaces"), [("everything", {"any": True}), ("namespaces-monitored", {"matchNames": ["ml"]})]
)
def test_the_pod_monitors_select_the_pods_the_operator_builds(name: str, namespaces: Obj) -> None:
    """Checked against the operator's own pod templates: labels, port names, and the service label the
    dashboard's `gis` comes from."""
    service = load_service(ROOT / "examples" / "sleep.yaml")
    owner = {"apiVersion": "gpuscale.io/v1alpha1", "kind": "GpuInferenceService", "name": "sleep", "uid": "u"}
    built = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]
        for d in build_owned(service, owner, 1, DEFAULT_GATEWAY_IMAGE)
        if d["kind"] == "Deployment"
    }
    monitors = {m["metadata"]["name"]: m for m in of_kind(render(name), "PodMonitor")}
    assert set(monitors) == {"gpuscale-gateway", "gpuscale-model"}
    service_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", SERVICE_LABEL)
    for component, template in built.items():
        monitor = monitors[f"gpuscale-{component}"]
        assert monitor["spec"]["namespaceSelector"] == namespaces
        assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        other = built["model" if component == "gateway" else "gateway"]
        assert not monitor["spec"]["selector"]["matchLabels"].items() <= other["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        (container,) = template["spec"]["containers"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert endpoint["path"] == "/metrics"
        targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert targets["gis"] == [service_label]
    # The gateway is scraped on its admin port: its http port forwards every path to a model pod.
    assert monitors["gpuscale-gateway"]["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


# --- namespaces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_namespaced_objects_go_to_the_release_namespace(name: str) -> None:
    watched = set(VALUE_SETS[name].get("watchNamespaces", []))
    for obj in render(name):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, obj["metadata"]
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert namespace in watched
        else:
            assert namespace == NAMESPACE, f"{obj['kind']} {obj['metadata']['name']}: {namespace}"


# --- the CRD ------------------------------------------------------------------------------------------------


def test_the_charts_crd_is_a_byte_identical_copy_of_crds() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"the chart's CRD differs from the source: "
        f"cp {CRD_SOURCE.relative_to(ROOT)} {CRD_COPY.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("name", ["defaults", "crds-not-kept"])
def test_the_rendered_crd_is_the_source_crd_with_helms_labels(name: str) -> None:
    rendered = one(render(name), "CustomResourceDefinition")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    metadata = rendered["metadata"]
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    for added in ("labels", "annotations"):
        metadata.pop(added, None)
    assert rendered == source


def test_the_crd_is_kept_on_uninstall_exactly_when_crds_keep() -> None:
    kept = one(render("defaults"), "CustomResourceDefinition")
    assert kept["metadata"]["annotations"] == {KEEP: "keep"}
    dropped = one(render("crds-not-kept"), "CustomResourceDefinition")
    assert KEEP not in (dropped["metadata"].get("annotations") or {})
    # Nothing else outlives the release.
    for name in SETS:
        for obj in render(name):
            if obj["kind"] != "CustomResourceDefinition":
                assert KEEP not in (obj["metadata"].get("annotations") or {}), obj["metadata"]


def test_crds_install_false_leaves_the_crd_out() -> None:
    assert not of_kind(render("no-crds"), "CustomResourceDefinition")
    assert {o["kind"] for o in render("no-crds")} == {o["kind"] for o in render("defaults")} - {
        "CustomResourceDefinition"
    }


# --- NOTES.txt ----------------------------------------------------------------------------------------------


def notes(*settings: str) -> str:
    args = [a for s in settings for a in ("--set", s)]
    done = helm(
        "install",
        "gpuscale",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        *args,
    )
    assert done.returncode == 0, done.stderr
    assert "NOTES:" in done.stdout
    return done.stdout.split("NOTES:", 1)[1]


def test_notes_say_what_to_run_next() -> None:
    text = notes()
    example = yaml.safe_load((ROOT / "examples" / "sleep.yaml").read_text())
    name = example["metadata"]["name"]
    assert "namespace" not in example["metadata"]  # so that `-n NS apply` puts it where NOTES say
    for line in (
        f"kubectl -n {NAMESPACE} rollout status deployment/gpuscale-operator",
        "kubectl -n default apply -f examples/sleep.yaml",
        "kubectl -n default get gis -w",
        f"kubectl -n default port-forward service/{name} 8080:80",
        f"localhost:8080/v2/models/{name}/infer",
        f"kubectl -n {NAMESPACE} port-forward service/gpuscale-operator-metrics 8080",
        "kubectl delete crd gpuinferenceservices.gpuscale.io",
    ):
        assert line in text, f"{line!r} not in NOTES:\n{text}"
    assert "every namespace" in text
    assert "{{" not in text
    assert "<no value>" not in text
    # The example the notes point at is in the repository, under that path.
    assert (ROOT / "examples" / "sleep.yaml").is_file()


def test_notes_follow_the_values() -> None:
    text = notes("watchNamespaces={ml,staging}", "crds.install=false", "crds.keep=false", "rbac.create=false")
    assert "the namespaces ml, staging" in text
    assert "kubectl -n ml apply -f examples/sleep.yaml" in text
    assert f"kubectl apply -f {CRD_SOURCE.relative_to(ROOT)}" in text
    assert "rbac.create=false" in text
    assert "deploy/rbac/" in text
    assert (ROOT / "deploy" / "rbac").is_dir()
    assert "kubectl delete crd" not in text


def test_the_chart_is_this_releases() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == __version__
