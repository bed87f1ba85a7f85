"""The operator's RBAC, derived from what it does: a full life cycle against the API test server (create,
load and scale up, idle and scale down, drift repaired in every owned kind, the gateway turned off,
delete), run once per mode (-A, and -n for one namespace), with every request attributed
to its caller by its bearer token, as a real API server's authorizer would. The shipped roles in
deploy/rbac/ must grant each request the operator made, and nothing it did not make except a short list
of permissions with a reason each.

Who is who: the operator (kopf and its own client) logs in with the kubeconfig's token; the gateway
processes, which play the gateway pods, get a kubeconfig of their own with another token; the test's
own requests carry a third. The test server records requests without a caller, so a middleware put in
front of its app here notes each request's token for the evidence entry the request makes.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from gpuscale.crd import build_crd
from gpuscale.kube.objects import build_gateway_rbac
from gpuscale.spec import parse_service

import kube_test_server.server
from kube_test_server.app import ApiState, Request, make_app
from kube_test_server.server import KubeTestServer
from tests.conftest import condition, wait_until
from tests.kopf_runs import kopf_env
from tests.operator.conftest import (
    CRS,
    DEPLOYMENTS,
    NS,
    Harness,
    gateway_url,
    load,
    run_operator,
    selector,
    sleep_service,
    stopped_cleanly,
)
from tests.pod_runtime import ProcessRuntime

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_ROLE_FILE = ROOT / "deploy" / "rbac" / "operator-clusterrole.yaml"
ROLE_FILE = ROOT / "deploy" / "rbac" / "operator-role.yaml"

OPERATOR, GATEWAY, TEST = "Bearer kube-test-server", "Bearer gateway", "Bearer test"
RBAC = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"
LABEL = "app.kubernetes.io/managed-by"

# A permission: (verb, API group, resource or resource/subresource).
Permission = tuple[str, str, str]

# Granted though the life cycle does not show the operator using them, each for a reason.
NOT_IN_EVIDENCE: dict[Permission, str] = {
    ("get", "", "pods"): "escalation check: the operator creates the gateway's Role with get/list/watch "
    "on pods, and the API server refuses a Role granting what its creator does not hold",
}


# --- attributing requests to callers ----------------------------------------------------------------------

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


class Attributed(list[Request]):
    """The server's evidence list, also noting who made each request (the token of the request being
    served: the test server appends the entry from the request's own handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[str] = []

    def append(self, request: Request) -> None:
        super().append(request)
        self.callers.append(CALLER.get())

    def clear(self) -> None:
        super().clear()
        self.callers.clear()

    def snapshot(self) -> list[tuple[str, Request]]:
        return list(zip(self.callers, self, strict=True))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = CALLER.set(request.headers.get("Authorization", ""))
    try:
        return await handler(request)
    finally:
        CALLER.reset(token)


def make_app_with_callers(state: ApiState) -> web.Application:
    app = make_app(state)
    app.middlewares.append(identify)
    state.evidence = Attributed()
    return app


@dataclass
class Observed:
    kube: KubeTestServer
    harness: Harness

    def evidence(self) -> list[tuple[str, Request]]:
        """(caller, request) for each request since the evidence was last cleared, in order."""

        def take(_: object) -> list[tuple[str, Request]]:
            evidence = self.kube.state.evidence
            assert isinstance(evidence, Attributed)
            return evidence.snapshot()  # on the server's loop: no request is appending meanwhile

        return self.kube.call(take)


@pytest.fixture
def observed(
    kube_cluster: Callable[..., KubeTestServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Observed]:
    monkeypatch.setattr(kube_test_server.server, "make_app", make_app_with_callers)
    gateway_kubeconfig = tmp_path / "gateway-kubeconfig.yaml"
    runtime = ProcessRuntime(gateway_kubeconfig)
    kube = kube_cluster(runtime=runtime)
    kubeconfig = kube.kubeconfig()
    kubeconfig["users"][0]["user"]["token"] = GATEWAY.removeprefix("Bearer ")
    gateway_kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    kopf_env(monkeypatch, kube.write_kubeconfig(tmp_path / "kubeconfig.yaml"))
    kube.apply(build_crd())
    try:
        with httpx.Client(base_url=kube.url, timeout=10, headers={"Authorization": TEST}) as http:
            yield Observed(kube, Harness(kube, runtime, http))
    finally:
        runtime.stop_all()


# --- the life cycle ----------------------------------------------------------------------------------------


# Someone else's edits to the owned objects, which the next reconcile undoes (each object's own kind).
TAMPERED: dict[str, Obj] = {
    f"/api/v1/namespaces/{NS}/serviceaccounts/sleep-gateway": {"metadata": {"labels": {LABEL: "someone"}}},
    f"/api/v1/namespaces/{NS}/services/sleep-model": {"metadata": {"labels": {LABEL: "someone"}}},
    f"{DEPLOYMENTS}/sleep-model": {"metadata": {"labels": {LABEL: "someone"}}},
    f"{RBAC}/roles/sleep-gateway": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    f"{RBAC}/rolebindings/sleep-gateway": {"metadata": {"labels": {LABEL: "someone"}}},
}


def life_cycle(harness: Harness) -> None:
    """Create, scale up under load, scale down when idle, repair drift in every owned kind, turn the
    gateway off, delete: each code path of the operator that talks to the API."""

    def replicas() -> int:
        count: int = harness.get(f"{DEPLOYMENTS}/sleep-model")["spec"]["replicas"]
        return count

    service = sleep_service(stableWindowSeconds=2, burstWindowSeconds=1, scaleDownDelaySeconds=1)
    harness.http.post(CRS, json=service).raise_for_status()
    wait_until(lambda: condition(harness.service("sleep"), "ScalingActive").get("status") == "True", 30)
    codes = asyncio.run(load(gateway_url(harness, "sleep"), clients=4, seconds=3))
    assert set(codes) == {200}
    assert replicas() > 1
    wait_until(lambda: replicas() == 1, 20)
    assert {"ScaledUp", "ScaledDown"} <= {e["reason"] for e in harness.events("sleep")}

    for path, body in TAMPERED.items():
        harness.merge_patch(path, body).raise_for_status()
    # A reconcile, no rollout.
    harness.merge_patch(f"{CRS}/sleep", {"metadata": {"labels": {"team": "a"}}}).raise_for_status()

    def repaired() -> bool:
        return all(
            harness.get(path)["metadata"]["labels"][LABEL] == "gpuscale-operator"
            for path in TAMPERED
            if "/roles/" not in path
        ) and harness.get(f"{RBAC}/roles/sleep-gateway")["rules"][0]["verbs"] == ["get", "list", "watch"]

    wait_until(repaired, 10)

    harness.merge_patch(f"{CRS}/sleep", {"spec": {"gateway": {"enabled": False}}}).raise_for_status()
    wait_until(lambda: not harness.exists(f"{DEPLOYMENTS}/sleep-gateway"), 10)
    wait_until(lambda: not harness.exists(f"/api/v1/namespaces/{NS}/serviceaccounts/sleep-gateway"), 10)
    wait_until(lambda: not harness.pods(selector("sleep", "gateway")), 20)

    harness.http.delete(f"{CRS}/sleep").raise_for_status()
    wait_until(lambda: not harness.exists(f"{CRS}/sleep"), 10)
    assert not harness.exists(f"{DEPLOYMENTS}/sleep-model")
    # Every pod gone, its process stopped by the kubelet: none left for the harness's teardown.
    wait_until(lambda: not harness.pods("app.kubernetes.io/instance=sleep"), 20)


def operator_evidence(observed: Observed, scope: list[str]) -> list[Request]:
    observed.kube.clear_evidence()
    with run_operator(*scope) as runner:
        life_cycle(observed.harness)
    stopped_cleanly(runner)
    evidence = observed.evidence()
    # The attribution works: each caller shows up, and the gateway only ever read pods.
    assert {caller for caller, _ in evidence} == {OPERATOR, GATEWAY, TEST}
    gateway = {(r.verb, r.resource) for caller, r in evidence if caller == GATEWAY}
    assert ("watch", "pods") in gateway
    assert gateway <= {("get", "pods"), ("list", "pods"), ("watch", "pods")}
    return [r for caller, r in evidence if caller == OPERATOR]


# --- roles -------------------------------------------------------------------------------------------------


def permission(r: Request) -> Permission:
    return r.verb, r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource


def granted(rules: Iterable[Obj]) -> set[Permission]:
    out: set[Permission] = set()
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"no wildcards: {rule}"
        assert "resourceNames" not in rule, rule  # names differ per service; list/watch/create take none
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((verb, group, resource))
    return out


def documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    return docs


def of_kind(docs: list[Obj], kind: str) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind]


def missing(used: set[Permission], rules: set[Permission]) -> list[str]:
    return sorted(f"{verb} {group or 'core'}/{resource}" for verb, group, resource in used - rules)


def bound_to_the_operator(docs: list[Obj], binding_kind: str, role: Obj) -> None:
    """The binding names the role, and its subject is the ServiceAccount of the same file."""
    (account,) = of_kind(docs, "ServiceAccount")
    bindings = [b for b in of_kind(docs, binding_kind) if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert len(bindings) == 1, bindings
    (binding,) = bindings
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    if role["kind"] == "Role":
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]


def test_the_roles_are_valid_and_hold_what_the_gateway_role_grants() -> None:
    """Escalation prevention: the operator creates the gateway's Role and binds it, so it must hold every
    permission in it, in either mode."""
    service = parse_service(sleep_service(), "test")
    (gateway_role,) = [
        o
        for o in build_gateway_rbac(service, {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"})
        if o["kind"] == "Role"
    ]
    needed = granted(gateway_role["rules"])
    assert needed == {("get", "", "pods"), ("list", "", "pods"), ("watch", "", "pods")}
    cluster_docs = documents(CLUSTER_ROLE_FILE)
    (cluster_role,) = of_kind(cluster_docs, "ClusterRole")
    bound_to_the_operator(cluster_docs, "ClusterRoleBinding", cluster_role)
    assert needed <= granted(cluster_role["rules"])

    docs = documents(ROLE_FILE)
    (role,) = of_kind(docs, "Role")
    (cluster_reads,) = of_kind(docs, "ClusterRole")
    bound_to_the_operator(docs, "RoleBinding", role)
    bound_to_the_operator(docs, "ClusterRoleBinding", cluster_reads)
    assert needed <= granted(role["rules"])
    assert set(NOT_IN_EVIDENCE) <= needed  # what is granted without evidence, the gateway's Role needs


def test_the_cluster_role_grants_exactly_what_the_operator_uses_across_namespaces(observed: Observed) -> None:
    evidence = operator_evidence(observed, ["-A"])
    (role,) = of_kind(documents(CLUSTER_ROLE_FILE), "ClusterRole")
    used = {permission(r) for r in evidence}
    rules = granted(role["rules"])
    assert not missing(used, rules), f"used but not granted: {missing(used, rules)}"
    unused = rules - used
    assert unused <= set(NOT_IN_EVIDENCE), f"granted but not used: {sorted(unused - set(NOT_IN_EVIDENCE))}"
    # Cluster-wide: kopf lists and watches the services across namespaces, not per namespace.
    assert any(
        r.verb == "watch" and r.resource == "gpuinferenceservices" and not r.namespace for r in evidence
    )
    assert not any(r.resource == "namespaces" for r in evidence)


def test_the_namespaced_roles_grant_exactly_what_the_operator_uses_in_one_namespace(
    observed: Observed,
) -> None:
    evidence = operator_evidence(observed, ["-n", NS])
    docs = documents(ROLE_FILE)
    (role,) = of_kind(docs, "Role")
    (cluster_reads,) = of_kind(docs, "ClusterRole")
    assert role["metadata"]["namespace"] == NS
    assert {r.namespace for r in evidence} == {NS, ""}
    # In the watched namespace, the Role; outside any namespace (cluster-scoped kinds), the ClusterRole.
    for scope, rules, allowed in (
        ("namespace", granted(role["rules"]), set(NOT_IN_EVIDENCE)),
        ("cluster", granted(cluster_reads["rules"]), set()),
    ):
        used = {permission(r) for r in evidence if bool(r.namespace) == (scope == "namespace")}
        assert not missing(used, rules), f"{scope}: used but not granted: {missing(used, rules)}"
        unused = rules - used
        assert unused <= allowed, f"{scope}: granted but not used: {sorted(unused - allowed)}"
    cluster_scoped = {r.resource for r in evidence if not r.namespace}
    assert cluster_scoped == {"namespaces", "customresourcedefinitions"}
