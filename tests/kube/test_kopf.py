"""kopf runs against the test server as against a cluster: `kopf run` of a small operator (kopf_operator.py)
watches, patches, finalizes, posts Events, and rides out dropped watches and a failing request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from kube_test_server.server import KubeTestServer
from tests.conftest import wait_until
from tests.kopf_runs import kopf_env, kopf_runner
from tests.kube.conftest import widget

OPERATOR = Path(__file__).with_name("kopf_operator.py")
FINALIZER = kopf.OperatorSettings().persistence.finalizer
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"


@pytest.fixture
def operator_env(widgets: dict[str, Any], kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CRD exists and KUBECONFIG points at the server before kopf starts, as on a cluster."""
    kopf_env(monkeypatch, kubeconfig)
    return kubeconfig


def kopf_run(*scope: str) -> KopfRunner:
    return kopf_runner(OPERATOR, "--verbose", *scope, timeout=20)


@pytest.fixture
def objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def read(objects: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def handled(objects: client.CustomObjectsApi, namespace: str, name: str, ticks: int = 0) -> bool:
    """The create handler has written its status, kopf's finalizer is on, and the timer ticked enough."""
    obj = read(objects, namespace, name) or {}
    status = obj.get("status", {})
    return (
        status.get("selector") == f"widget={name}"
        and [c.get("type") for c in status.get("conditions", [])] == ["Ready"]
        and FINALIZER in obj["metadata"].get("finalizers", [])
        and int(status.get("replicas") or 0) >= ticks
    )


def config_map_exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_config_map(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def widget_events(core: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in found if e.involved_object.kind == "Widget"]


def create_then_delete(
    objects: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, name: str
) -> None:
    """The whole life of one widget under the operator, each step checked on the API."""
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget(name))
    # Two ticks of the 0.5 s timer plus kopf's start: well inside the limit even on a loaded VM.
    wait_until(lambda: handled(objects, namespace, name, ticks=2), timeout=10)
    wait_until(lambda: bool(widget_events(core, namespace, name)))
    event = widget_events(core, namespace, name)[0]
    assert (event.type, event.reason, event.message) == ("Normal", "Created", f"widget {name} is ready")
    assert event.involved_object.api_version == f"{GROUP}/{VERSION}"
    assert event.involved_object.uid == (read(objects, namespace, name) or {})["metadata"]["uid"]

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    # The finalizer holds the object until the delete handler has run and kopf has let go.
    wait_until(lambda: read(objects, namespace, name) is None, timeout=8)
    assert config_map_exists(core, namespace, f"deleted-{name}")
    with pytest.raises(client.ApiException) as gone:
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert gone.value.status == 404


def verbs(kube: KubeTestServer) -> set[tuple[str, str, str, str]]:
    return {(r.verb, r.resource, r.subresource, r.namespace) for r in kube.evidence}


def finished_cleanly(runner: KopfRunner) -> None:
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.output


@pytest.mark.usefixtures("operator_env")
def test_a_namespaced_operator_handles_a_widgets_whole_life(
    kube: KubeTestServer, objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    kube.clear_evidence()
    with kopf_run("-n", "default") as runner:
        create_then_delete(objects, core, "default", "alpha")
    finished_cleanly(runner)
    seen = verbs(kube)
    assert {
        ("list", "widgets", "", "default"),
        ("watch", "widgets", "", "default"),
        ("patch", "widgets", "", "default"),  # the finalizer on, then off
        ("patch", "widgets", "status", "default"),  # the handler's and the timer's status
        ("create", "events", "", "default"),
    } <= seen
    # A namespaced operator never reaches beyond its namespace.
    assert all(ns == "default" for verb, resource, _, ns in seen if resource == "widgets")


@pytest.mark.usefixtures("operator_env")
def test_a_cluster_wide_operator_handles_widgets_in_any_namespace(
    kube: KubeTestServer, objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "team-b"}})
    kube.clear_evidence()
    with kopf_run("-A") as runner:
        create_then_delete(objects, core, "team-b", "beta")
    finished_cleanly(runner)
    seen = verbs(kube)
    # One cluster-wide list and watch (no namespace in the path); writes go to the object's namespace.
    assert {
        ("list", "widgets", "", ""),
        ("watch", "widgets", "", ""),
        ("patch", "widgets", "", "team-b"),
        ("patch", "widgets", "status", "team-b"),
        ("create", "events", "", "team-b"),
    } <= seen
    assert ("list", "widgets", "", "default") not in seen


@pytest.mark.usefixtures("operator_env")
def test_kopf_reconnects_after_dropped_watches_and_a_500(
    kube: KubeTestServer, objects: client.CustomObjectsApi
) -> None:
    with kopf_run("-n", "default") as runner:
        objects.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("first"))
        wait_until(lambda: handled(objects, "default", "first"), timeout=8)
        # The fault goes in before the drop: kopf re-opens the watch at once, and its very next
        # request on the collection must be the one that fails.
        fault = kube.inject_fault(500, method="GET", path=r"/namespaces/default/widgets$")
        kube.clear_evidence()
        assert kube.drop_watches() >= 1
        wait_until(lambda: fault.times == 0, timeout=5)
        objects.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("second"))
        wait_until(lambda: handled(objects, "default", "second", ticks=1), timeout=8)
    finished_cleanly(runner)
    # A faulted request is answered before it is recorded: what shows is the watch kopf re-opened
    # after its retry, resumed from the last resourceVersion it saw (no 410, so no new list), and
    # its patches on the widget that watch delivered.
    after = [(r.verb, r.resource, r.name) for r in kube.evidence if r.resource == "widgets"]
    assert ("watch", "widgets", "") in after
    assert ("list", "widgets", "") not in after
    assert ("patch", "widgets", "second") in after
    assert "will retry" in runner.output
    assert "injected by the test: InternalError" in runner.output
