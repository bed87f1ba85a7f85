"""The operator where things change or go wrong: a spec edited after creation, autoscaling turned off and
the service scaled by hand, an operator restarted mid-run, API errors and broken watches, and specs the
operator cannot use. Same harness as test_operator.py: the API test server with every controller, real
pod-server and gateway processes as pods, the operator in-process under kopf's KopfRunner."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt
from gpuscale.spec import AutoscalingSpec, GatewaySpec, ServiceSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import BaseModel

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
    stopped_cleanly,
    wait_ready,
)

Obj = dict[str, Any]

REPLICASETS = f"/apis/apps/v1/namespaces/{NS}/replicasets"


@pytest.fixture
def harness(harness: Harness) -> Iterator[Harness]:
    """conftest's harness, and at the end (the operator stopped by then) every Deployment deleted and its pods
    gone, their processes stopped by the kubelet: none is left for the harness's own teardown, which
    kills processes while the kubelet still runs, and the kubelet would start a killed one again."""
    yield harness
    for deployment in harness.get(DEPLOYMENTS)["items"]:
        harness.http.delete(f"{DEPLOYMENTS}/{deployment['metadata']['name']}")
    wait_until(lambda: not harness.get(f"/api/v1/namespaces/{NS}/pods")["items"], 30)


# --- helpers --------------------------------------------------------------------------------------------


def model(harness: Harness, name: str) -> Obj:
    return harness.get(f"{DEPLOYMENTS}/{name}-model")


def model_replicas(harness: Harness, name: str) -> int:
    replicas: int = model(harness, name)["spec"]["replicas"]
    return replicas


def replicasets(harness: Harness, name: str) -> list[Obj]:
    items: list[Obj] = harness.get(f"{REPLICASETS}?labelSelector={selector(name, 'model')}")["items"]
    return items


def deployment_writes(harness: Harness) -> list[Any]:
    """Writes to Deployments (the objects themselves or their /scale) in the evidence so far."""
    return [
        r
        for r in harness.kube.evidence
        if r.resource == "deployments" and r.verb in ("create", "update", "patch", "delete")
    ]


def held(check: Callable[[], bool], seconds: float, interval: float = 0.2) -> bool:
    """Whether ``check`` stays true for ``seconds`` (polled every ``interval``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(interval)
    return check()


def tick_errors() -> float:
    return REGISTRY.get_sample_value("gpuscale_operator_tick_errors_total") or 0.0


# --- a spec edited after creation -----------------------------------------------------------------------


def test_a_template_change_rolls_the_model_out_and_an_unchanged_spec_writes_nothing(
    harness: Harness,
) -> None:
    with run_operator() as runner:
        harness.kube.apply(sleep_service())
        wait_ready(harness, "sleep", scaling=False)
        before = model(harness, "sleep")
        (old_rs,) = replicasets(harness, "sleep")
        service = harness.service("sleep")
        assert service["status"]["observedGeneration"] == service["metadata"]["generation"]

        env = [
            {"name": "GPUSCALE_MODEL", "value": "sleep"},
            {"name": "GPUSCALE_SLEEP_SECONDS", "value": "0.2"},
        ]
        harness.merge_patch(f"{CRS}/sleep", {"spec": {"template": {"env": env}}}).raise_for_status()
        generation = harness.service("sleep")["metadata"]["generation"]
        assert generation == service["metadata"]["generation"] + 1

        # The operator applies the new template: the Deployment's generation moves, a new ReplicaSet
        # takes over, and the service says which generation it acted on.
        wait_until(
            lambda: model(harness, "sleep")["metadata"]["generation"] > before["metadata"]["generation"]
        )
        container = model(harness, "sleep")["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "GPUSCALE_SLEEP_SECONDS", "value": "0.2"} in container["env"]
        wait_until(lambda: harness.service("sleep")["status"].get("observedGeneration") == generation)

        def rolled_out() -> bool:
            sets = {rs["metadata"]["name"]: rs for rs in replicasets(harness, "sleep")}
            new = [rs for name, rs in sets.items() if name != old_rs["metadata"]["name"]]
            return (
                len(new) == 1
                and (new[0].get("status") or {}).get("readyReplicas") == 1
                and sets[old_rs["metadata"]["name"]]["spec"]["replicas"] == 0
            )

        wait_until(rolled_out, 20)
        (pod,) = [
            p for p in harness.pods(selector("sleep", "model")) if not p["metadata"].get("deletionTimestamp")
        ]
        assert (
            pod["metadata"]["labels"]["pod-template-hash"]
            != old_rs["metadata"]["labels"]["pod-template-hash"]
        )
        assert model_replicas(harness, "sleep") == 1

        # Nothing changes now: ticks go on, reading the watched cache rather than the API each time, and
        # nothing writes to the Deployment.
        harness.kube.clear_evidence()
        ticks = REGISTRY.get_sample_value("gpuscale_operator_tick_seconds_count") or 0.0
        time.sleep(3)
        assert (REGISTRY.get_sample_value("gpuscale_operator_tick_seconds_count") or 0.0) >= ticks + 2
        evidence = harness.kube.evidence
        assert not any(r.verb in ("get", "list") and r.resource in ("deployments", "pods") for r in evidence)
        assert deployment_writes(harness) == []

        # A change that reaches no owned object (a label on the service) runs the reconcile, which
        # reads every object and writes none of them.
        harness.kube.clear_evidence()
        harness.merge_patch(f"{CRS}/sleep", {"metadata": {"labels": {"team": "a"}}}).raise_for_status()
        wait_until(
            lambda: any(
                r.verb == "get" and r.resource == "serviceaccounts" and r.name == "sleep-gateway"
                for r in harness.kube.evidence
            )
        )
        time.sleep(1)
        assert deployment_writes(harness) == []
        assert not any(
            r.verb in ("create", "patch", "update")
            and r.resource in ("services", "serviceaccounts", "roles", "rolebindings")
            for r in harness.kube.evidence
        )
    stopped_cleanly(runner)


def test_a_slow_starting_rollout_is_not_mistaken_for_extra_replicas(harness: Harness) -> None:
    """During a rollout the Deployment runs one surge pod beyond `replicas` until it is ready. The loop
    must not count it as capacity to remove: the Deployment's replicas stay where the loop put them."""
    with run_operator() as runner:
        harness.kube.apply(sleep_service())
        wait_ready(harness, "sleep")
        (old_rs,) = replicasets(harness, "sleep")
        env = [
            {"name": "GPUSCALE_MODEL", "value": "sleep"},
            {"name": "GPUSCALE_SLEEP_SECONDS", "value": "0.5"},
            # Loading takes longer than scaleDownDelaySeconds (2 s): the surge pod is "starting" that long.
            {"name": "GPUSCALE_LOAD_SECONDS", "value": "5"},
        ]
        harness.merge_patch(f"{CRS}/sleep", {"spec": {"template": {"env": env}}}).raise_for_status()
        seen: list[int] = []

        def rolled_out() -> bool:
            seen.append(model_replicas(harness, "sleep"))
            new = [
                rs
                for rs in replicasets(harness, "sleep")
                if rs["metadata"]["name"] != old_rs["metadata"]["name"]
            ]
            return len(new) == 1 and (new[0].get("status") or {}).get("readyReplicas") == 1

        wait_until(rolled_out, 20, interval=0.1)

        def still_one() -> bool:
            seen.append(model_replicas(harness, "sleep"))
            return seen[-1] == 1

        assert held(still_one, 2)
        assert set(seen) == {1}
    stopped_cleanly(runner)


# --- autoscaling off: the spec's replicas, and /scale ---------------------------------------------------


def test_with_autoscaling_off_the_spec_replicas_run_and_scale_writes_reach_the_deployment(
    harness: Harness,
) -> None:
    fixed = sleep_service("fixed", enabled=False)
    fixed["spec"]["replicas"] = 2
    with run_operator() as runner:
        harness.kube.apply(fixed)
        wait_until(lambda: harness.exists(f"{DEPLOYMENTS}/fixed-model"), 20)
        assert model_replicas(harness, "fixed") == 2
        wait_until(lambda: (model(harness, "fixed").get("status") or {}).get("readyReplicas") == 2, 20)

        # What `kubectl scale gis fixed --replicas=3` sends: a merge patch of the CR's /scale.
        answer = harness.merge_patch(f"{CRS}/fixed/scale", {"spec": {"replicas": 3}})
        answer.raise_for_status()
        assert answer.json()["kind"] == "Scale"
        assert answer.json()["spec"]["replicas"] == 3
        assert harness.service("fixed")["spec"]["replicas"] == 3
        wait_until(lambda: model_replicas(harness, "fixed") == 3, 10)
        wait_until(lambda: (model(harness, "fixed").get("status") or {}).get("readyReplicas") == 3, 20)

        wait_until(lambda: condition(harness.service("fixed"), "ScalingActive").get("reason") == "Disabled")
        scaling = condition(harness.service("fixed"), "ScalingActive")
        assert scaling["status"] == "False"
        assert "autoscaling.enabled is false" in scaling["message"]
        # The loop leaves the count alone: nothing but the operator's reconcile wrote it.
        assert held(lambda: model_replicas(harness, "fixed") == 3, 3)
        wait_until(lambda: harness.get(f"{CRS}/fixed/scale").get("status", {}).get("replicas") == 3)
        scale = harness.get(f"{CRS}/fixed/scale")
        assert scale["status"]["selector"] == "app.kubernetes.io/name=gpuscale," + selector("fixed", "model")
        assert "desiredReplicas" not in harness.service("fixed")["status"]
    stopped_cleanly(runner)


# --- an operator restart ----------------------------------------------------------------------------------


def test_a_restarted_operator_reads_the_autoscaler_state_back_and_does_not_flap(harness: Harness) -> None:
    # Long windows and delay: nothing may scale down while the test runs, with or without the saved state.
    slow_down: dict[str, Any] = {
        "stableWindowSeconds": 30,
        "burstWindowSeconds": 2,
        "scaleDownDelaySeconds": 30,
    }
    with run_operator() as first:
        harness.kube.apply(sleep_service(**slow_down))
        wait_ready(harness, "sleep")
        url = gateway_url(harness, "sleep")
        codes = asyncio.run(load(url, clients=4, seconds=5))
        assert set(codes) == {200}
        wait_until(lambda: model_replicas(harness, "sleep") > 1, 5)
        # The loop writes its state every tick; wait until it has seen the load and scaled on it.
        wait_until(lambda: harness.service("sleep")["status"].get("desiredReplicas", 0) > 1)
    stopped_cleanly(first)
    scaled = model_replicas(harness, "sleep")
    saved = harness.service("sleep")["status"]["autoscalerState"]
    assert saved["last_scale_up"] is not None
    assert saved["samples"]
    ups = sum(1 for e in harness.events("sleep") if e["reason"] == "ScaledUp")

    restarted = time.time()
    with run_operator() as second:
        # The first tick after the restart writes status; its state extends the saved one.
        def resumed() -> bool:
            state = harness.service("sleep")["status"]["autoscalerState"]
            return bool(state["samples"]) and state["samples"][-1][0] > restarted

        wait_until(resumed, 10)
        # The idle service keeps its replicas, tick after tick: neither back to min at once nor up again.
        assert held(lambda: model_replicas(harness, "sleep") == scaled, 5)
        status = harness.service("sleep")["status"]
        state = status["autoscalerState"]
        # Read back, not started afresh: the samples from before the restart and the last scale-up remain.
        assert min(t for t, _ in state["samples"]) < restarted
        assert state["last_scale_up"] == saved["last_scale_up"]
        assert status["desiredReplicas"] == scaled
        assert condition(harness.service("sleep"), "ScalingActive")["status"] == "True"
        reasons = [e["reason"] for e in harness.events("sleep")]
        assert reasons.count("ScaledUp") == ups
        assert "ScaledDown" not in reasons
    stopped_cleanly(second)


# --- API errors and broken watches ------------------------------------------------------------------------


def test_api_errors_and_dropped_watches_are_survived_and_the_scale_still_happens(harness: Harness) -> None:
    with run_operator() as runner:
        harness.kube.apply(sleep_service())
        wait_ready(harness, "sleep")
        url = gateway_url(harness, "sleep")
        errors_before = tick_errors()
        conflict = harness.kube.inject_fault(409, method="PATCH", path="deployments/.*/scale", times=1)
        broken = harness.kube.inject_fault(500, method="PATCH", path="deployments/.*/scale", times=1)
        results: list[list[int]] = []
        loader = threading.Thread(target=lambda: results.append(asyncio.run(load(url, 4, 6))))
        loader.start()
        try:
            # Both faults answer the loop's first two scale-ups; a later tick gets through.
            wait_until(lambda: conflict.times == 0 and broken.times == 0, 10)
            assert harness.kube.drop_watches() > 0  # kopf's, and the gateway's pod watch
            wait_until(lambda: model_replicas(harness, "sleep") > 1, 10)
        finally:
            loader.join()
        (codes,) = results
        assert codes
        assert set(codes) == {200}  # the gateway re-listed its pods after the drop and kept serving
        assert tick_errors() >= errors_before + 2
        assert "ScaledUp" in {e["reason"] for e in harness.events("sleep")}

        # kopf watches again after the drop: a spec change is still seen (spec.replicas bumps the
        # generation and, with autoscaling on, changes no object: no rollout runs into the teardown).
        harness.merge_patch(f"{CRS}/sleep", {"spec": {"replicas": 2}}).raise_for_status()
        generation = harness.service("sleep")["metadata"]["generation"]
        wait_until(lambda: harness.service("sleep")["status"].get("observedGeneration") == generation, 10)
    stopped_cleanly(runner)
    # The daemon's logger is local (kopf posts no events for daemons): the log says what went wrong.
    failures = [line for line in runner.output.splitlines() if "tick failed" in line]
    assert any("409" in line for line in failures), failures
    assert any("500" in line for line in failures), failures


# --- specs the operator cannot use ------------------------------------------------------------------------

# Each bounded field of the spec, as (path in the CR, bound kind, bound, integer?), read off spec.py's models
# so the cases follow the fields' bounds wherever they move.
Bound = tuple[tuple[str, ...], str, float, bool]


def bounds() -> list[Bound]:
    found: list[Bound] = []
    models: list[tuple[tuple[str, ...], type[BaseModel]]] = [
        (("spec",), ServiceSpec),
        (("spec", "autoscaling"), AutoscalingSpec),
        (("spec", "gateway"), GatewaySpec),
    ]
    for where, model in models:
        for name, field in model.model_fields.items():
            if field.annotation not in (int, float):
                continue
            key = field.alias or name
            integer = field.annotation is int
            for item in field.metadata:
                for kind, cls, attr in (
                    ("ge", Ge, "ge"),
                    ("gt", Gt, "gt"),
                    ("le", Le, "le"),
                    ("lt", Lt, "lt"),
                ):
                    if isinstance(item, cls):
                        found.append(((*where, key), kind, float(getattr(item, attr)), integer))
    return found


BOUNDS = bounds()
Case = tuple[tuple[str, ...], dict[tuple[str, ...], Any]]  # (the field to blame, the values to set)


@st.composite
def out_of_range(draw: st.DrawFn) -> Case:
    path, kind, bound, integer = draw(st.sampled_from(BOUNDS))
    below = kind in ("ge", "gt")
    if integer:
        edge = int(bound) - 1 if kind == "ge" else int(bound) + 1 if kind == "le" else int(bound)
        value: float = draw(
            st.integers(max_value=edge, min_value=edge - 10**6)
            if below
            else st.integers(min_value=edge, max_value=edge + 10**6)
        )
    else:
        far = st.floats(max_value=bound, min_value=bound - 1e6, exclude_max=kind == "ge", allow_nan=False)
        if not below:
            far = st.floats(min_value=bound, max_value=bound + 1e6, exclude_min=kind == "le", allow_nan=False)
        value = draw(far)
    return path, {path: value}


@st.composite
def crossed(draw: st.DrawFn) -> Case:
    """Each value in range, the pair not: minReplicas above maxReplicas, or a burst window longer than
    the stable one."""
    autoscaling = ("spec", "autoscaling")
    if draw(st.booleans()):
        high = draw(st.integers(min_value=1, max_value=999))
        low = draw(st.integers(min_value=1, max_value=high))
        return (*autoscaling, "minReplicas"), {
            (*autoscaling, "minReplicas"): high + 1,
            (*autoscaling, "maxReplicas"): low,
        }
    stable = draw(st.floats(min_value=0.5, max_value=3000, allow_nan=False))
    burst = draw(st.floats(min_value=stable, max_value=3600, exclude_min=True, allow_nan=False))
    return (*autoscaling, "burstWindowSeconds"), {
        (*autoscaling, "stableWindowSeconds"): stable,
        (*autoscaling, "burstWindowSeconds"): burst,
    }


def invalid_service(name: str, values: dict[tuple[str, ...], Any]) -> Obj:
    service = sleep_service(name)
    for path, value in values.items():
        node = service
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return service


def names_the_field(message: str, path: tuple[str, ...]) -> bool:
    """The API server names `spec.autoscaling.minReplicas`; a rule on the object names its parent and the
    rule's message the field (`spec.autoscaling: ... minReplicas must not exceed maxReplicas`)."""
    return ".".join(path) in message or (".".join(path[:-1]) in message and path[-1] in message)


def refused_or_reported(
    harness: Harness, names: itertools.count[int], case: Case, reported: list[str]
) -> str:
    """POST the service: a 422 must name the field; an accepted one must get Ready=False with a message
    naming it, from the operator. Returns which of the two happened."""
    path, values = case
    name = f"bad-{next(names)}"
    answer = harness.http.post(CRS, json=invalid_service(name, values))
    if answer.status_code == 422:
        body = answer.json()
        assert body["reason"] == "Invalid"
        assert names_the_field(body["message"], path), body["message"]
        return "refused"
    assert answer.status_code == 201, answer.text
    wait_until(lambda: condition(harness.service(name), "Ready").get("reason") == "InvalidSpec", 10)
    ready = condition(harness.service(name), "Ready")
    assert ready["status"] == "False"
    assert names_the_field(ready["message"], path), ready["message"]
    assert not harness.exists(f"{DEPLOYMENTS}/{name}-model")
    reported.append(name)
    return "reported"


def loosen_crd(harness: Harness) -> None:
    """A CRD left from an older release (no bounds in its schema): only the operator can say what is wrong."""
    url = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gpuinferenceservices.gpuscale.io"
    crd = harness.get(url)
    version = crd["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    harness.http.put(url, json=crd).raise_for_status()


EXAMPLES = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# kopf picks its credentials with the global `random.choice` on every API request, from the operator's own
# thread, so Hypothesis sees the global random state move while it generates an example. Nothing here
# draws from it: the examples stay reproducible.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_out_of_range_specs_are_refused_by_the_api_or_reported_by_the_operator(harness: Harness) -> None:
    names = itertools.count()
    outcomes: dict[str, list[str]] = {"schema": [], "operator": []}
    reported: list[str] = []
    with run_operator() as runner:

        @EXAMPLES
        @given(case=st.one_of(out_of_range(), crossed()))
        def against_the_schema(case: Case) -> None:
            outcomes["schema"].append(refused_or_reported(harness, names, case, reported))

        against_the_schema()

        loosen_crd(harness)

        @EXAMPLES
        @given(case=st.one_of(out_of_range(), crossed()))
        def against_the_operator(case: Case) -> None:
            outcomes["operator"].append(refused_or_reported(harness, names, case, reported))

        against_the_operator()
        # The generated CRD holds every bound of spec.py; without it, the operator holds them all.
        assert set(outcomes["schema"]) == {"refused"}
        assert set(outcomes["operator"]) == {"reported"}
        assert len(outcomes["operator"]) >= 10
        # And an event says so, checked once, outside the examples.
        negative_port: Case = (("spec", "port"), {("spec", "port"): -1})
        assert refused_or_reported(harness, names, negative_port, reported) == "reported"
        wait_until(lambda: "InvalidSpec" in {e["reason"] for e in harness.events(reported[-1])}, 5)
    stopped_cleanly(runner)
    assert "Traceback" not in runner.output


def test_a_template_override_of_the_wrong_shape_is_reported(harness: Harness) -> None:
    bad = sleep_service("shape")
    bad["spec"]["template"]["volumes"] = {"name": "not-a-list"}  # volumes is a list of mappings
    with run_operator() as runner:
        harness.kube.apply(bad)
        wait_until(lambda: condition(harness.service("shape"), "Ready").get("reason") == "InvalidSpec", 5)
        ready = condition(harness.service("shape"), "Ready")
        assert ready["status"] == "False"
        assert "spec.template.volumes" in ready["message"]
    stopped_cleanly(runner)
    assert "Traceback" not in runner.output


def test_template_keys_the_operator_does_not_read_are_a_warning_event(harness: Harness) -> None:
    typo = sleep_service("typo")
    typo["spec"]["template"]["nodeSelecter"] = {"gpu": "a100"}  # nodeSelector, misspelt
    with run_operator() as runner:
        harness.kube.apply(typo)
        wait_until(lambda: "IgnoredTemplateKeys" in {e["reason"] for e in harness.events("typo")}, 10)
        event = next(e for e in harness.events("typo") if e["reason"] == "IgnoredTemplateKeys")
        assert event["type"] == "Warning"
        assert event["message"].startswith("spec.template: nodeSelecter not used; the keys read are ")
        assert "nodeSelector" in event["message"]
        # Accepted all the same: the service runs.
        wait_until(lambda: condition(harness.service("typo"), "Ready").get("status") == "True", 20)
    stopped_cleanly(runner)


def test_a_tick_that_cannot_read_the_api_says_so_on_the_object(harness: Harness) -> None:
    with run_operator() as runner:
        harness.kube.apply(sleep_service("blind"))
        wait_ready(harness, "blind")
        # As an operator whose Role lost `get` and `list` on Deployments would see it: the watch behind
        # the loop's cache breaks and cannot list again, and the loop's own reads are refused.
        fault = harness.kube.inject_fault(
            403, method="GET", path="deployments(/blind-model)?$", times=-1, reason="Forbidden"
        )
        assert harness.kube.drop_watches() > 0
        wait_until(
            lambda: condition(harness.service("blind"), "ScalingActive").get("reason") == "TickFailed", 10
        )
        active = condition(harness.service("blind"), "ScalingActive")
        assert active["status"] == "False"
        assert active["message"].startswith("the control loop could not read the API or the gateway: ")
        assert "403" in active["message"]
        fault.times = 1  # one more refusal, then the server drops the fault: the permission is back
        wait_until(
            lambda: condition(harness.service("blind"), "ScalingActive").get("reason") == "Observing", 10
        )
        assert condition(harness.service("blind"), "Ready")["status"] == "True"
    stopped_cleanly(runner)
