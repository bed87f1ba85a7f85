"""The operator end to end against the API test server: a GpuInferenceService becomes its objects and
real processes, load scales the model Deployment up, idleness scales it down through idle pods only,
and deleting the service leaves nothing."""

from __future__ import annotations

import asyncio

from gpuscale.kube.backend import VICTIM_COST
from gpuscale.kube.objects import DELETION_COST
from prometheus_client import REGISTRY

from tests.conftest import condition, wait_until
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
    wait_ready,
)

MODEL = selector("sleep", "model")


def test_a_service_scales_up_under_load_and_down_through_idle_pods(harness: Harness) -> None:
    with run_operator() as runner:
        harness.kube.apply(sleep_service())
        wait_until(
            lambda: (
                harness.exists(f"{DEPLOYMENTS}/sleep-model")
                and harness.exists(f"{DEPLOYMENTS}/sleep-gateway")
            ),
            20,
        )
        uid = harness.service("sleep")["metadata"]["uid"]
        for path in (
            f"{DEPLOYMENTS}/sleep-model",
            f"{DEPLOYMENTS}/sleep-gateway",
            f"/api/v1/namespaces/{NS}/services/sleep",
            f"/api/v1/namespaces/{NS}/serviceaccounts/sleep-gateway",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/sleep-gateway",
        ):
            owners = harness.get(path)["metadata"]["ownerReferences"]
            assert [o["uid"] for o in owners] == [uid], path
        wait_ready(harness, "sleep")
        codes = asyncio.run(load(gateway_url(harness, "sleep"), clients=4, seconds=6))
        assert codes
        assert set(codes) == {200}
        scaled = harness.get(f"{DEPLOYMENTS}/sleep-model")["spec"]["replicas"]
        assert scaled > 1
        reasons = {e["reason"] for e in harness.events("sleep")}
        assert "ScaledUp" in reasons

        # Idle now: the replicas go, each marked cheapest to delete before the Deployment shrinks.
        wait_until(lambda: harness.get(f"{DEPLOYMENTS}/sleep-model")["spec"]["replicas"] == 1, 40)
        assert "ScaledDown" in {e["reason"] for e in harness.events("sleep")}
        # Exactly the pods marked cheapest to delete went, and the one left was never marked.
        marked = {
            c.obj["metadata"]["name"]
            for c in harness.kube.call(lambda s: list(s.history))
            if c.plural == "pods"
            and (c.obj["metadata"].get("annotations") or {}).get(DELETION_COST) == VICTIM_COST
        }
        wait_until(lambda: len(harness.pods(MODEL)) == 1, 20)
        (survivor,) = harness.pods(MODEL)
        assert marked
        assert survivor["metadata"]["name"] not in marked
        assert len(marked) == scaled - 1
        status = harness.service("sleep")["status"]
        assert status["desiredReplicas"] == 1
        assert status["autoscalerState"]["samples"] is not None
        assert status["lastScaleTime"]
        # The same numbers on the operator's /metrics (kopf runs in this process: one registry).
        labels = {"namespace": NS, "gis": "sleep"}
        assert REGISTRY.get_sample_value("gpuscale_operator_desired_replicas", labels) == 1
        wait_until(lambda: REGISTRY.get_sample_value("gpuscale_operator_ready_replicas", labels) == 1, 10)

        harness.http.delete(f"{CRS}/sleep")
        wait_until(lambda: not harness.exists(f"{DEPLOYMENTS}/sleep-model"), 20)
        assert not harness.exists(f"{DEPLOYMENTS}/sleep-gateway")
        assert not harness.exists(f"/api/v1/namespaces/{NS}/services/sleep")
        # The loop ended with the service, and its series with it.
        desired = "gpuscale_operator_desired_replicas"
        wait_until(lambda: REGISTRY.get_sample_value(desired, labels) is None, 10)
    assert runner.exit_code == 0
    assert runner.exception is None


def test_a_spec_the_operator_cannot_use_is_a_condition_and_an_event(harness: Harness) -> None:
    """The schema catches what it can; a CRD left from an older release may not, and then the operator
    says why on the object instead of crashing or retrying."""
    crd = harness.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gpuinferenceservices.gpuscale.io"
    )
    version = crd["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    harness.http.put(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}", json=crd
    ).raise_for_status()
    bad = sleep_service("bad")
    bad["spec"]["template"]["env"].append({"name": "9-not-a-name", "value": "x"})
    with run_operator() as runner:
        harness.kube.apply(bad)
        wait_until(lambda: condition(harness.service("bad"), "Ready").get("reason") == "InvalidSpec", 20)
        ready = condition(harness.service("bad"), "Ready")
        assert "spec.template.env[2].name" in str(ready["message"])
        # kopf posts events from its own queue, a moment after the status patch lands.
        wait_until(lambda: "InvalidSpec" in {e["reason"] for e in harness.events("bad")}, 5)
        assert not harness.exists(f"{DEPLOYMENTS}/bad-model")
    assert runner.exception is None


def test_pods_that_fit_no_node_say_so(harness: Harness) -> None:
    """maxReplicas beyond the cluster's GPUs: the pods wait, and the service says why."""
    gpu = sleep_service("gpu")
    gpu["spec"]["gpusPerReplica"] = 1  # the test cluster's node has no nvidia.com/gpu
    with run_operator() as runner:
        harness.kube.apply(gpu)
        wait_until(lambda: condition(harness.service("gpu"), "PodsSchedulable").get("status") == "False", 20)
        blocked = condition(harness.service("gpu"), "PodsSchedulable")
        assert blocked["reason"] == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in str(blocked["message"])
        ready = condition(harness.service("gpu"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert runner.exception is None


def test_without_a_gateway_the_pods_own_gauges_drive_the_scaling(harness: Harness) -> None:
    direct = sleep_service("direct")
    direct["spec"]["gateway"] = {"enabled": False}
    deploy = f"{DEPLOYMENTS}/direct-model"
    with run_operator() as runner:
        harness.kube.apply(direct)
        wait_until(lambda: condition(harness.service("direct"), "ScalingActive").get("status") == "True", 30)
        assert condition(harness.service("direct"), "ScalingActive")["reason"] == "ObservingPods"
        assert not harness.exists(f"{DEPLOYMENTS}/direct-gateway")
        (pod,) = harness.pods(selector("direct", "model"))
        port = direct["spec"]["port"]
        # Four clients on the one pod: three wait in its own queue, which its gauges report.
        codes = asyncio.run(load(f"http://{pod['status']['podIP']}:{port}", clients=4, seconds=4))
        assert set(codes) == {200}
        assert harness.get(deploy)["spec"]["replicas"] > 1
        wait_until(lambda: harness.get(deploy)["spec"]["replicas"] == 1, 40)
    assert runner.exit_code == 0
    assert runner.exception is None
