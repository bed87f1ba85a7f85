"""The API test server behaves like kube-apiserver where the operator relies on it (official client)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from kubernetes import client

from kube_test_server.app import Request
from kube_test_server.server import KubeTestServer
from tests.conftest import wait_until
from tests.kube.conftest import WIDGETS_CRD, deployment, status_of, widget

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
# The leading arguments (group, version, namespace, plural) of the client's calls on the test CRD's widgets.
WIDGETS = ("example.com", "v1", "default", "widgets")


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


APP = {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}


def failure(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(client.ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, status_of(caught.value)


# --- discovery -------------------------------------------------------------------------------------------


def test_discovery_lists_builtin_kinds_with_subresources(kube_http: httpx.Client) -> None:
    assert kube_http.get("/version").json()["gitVersion"].startswith("v1.")
    assert kube_http.get("/api").json()["versions"] == ["v1"]
    core = {r["name"]: r for r in kube_http.get("/api/v1").json()["resources"]}
    assert {"pods", "pods/status", "services", "events", "namespaces", "configmaps"} <= set(core)
    assert core["namespaces"]["namespaced"] is False
    assert core["pods"]["namespaced"] is True
    groups = {g["name"]: g for g in kube_http.get("/apis").json()["groups"]}
    assert {"apps", "discovery.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= set(groups)
    assert groups["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    apps = {r["name"]: r for r in kube_http.get("/apis/apps/v1").json()["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments/scale"]["group"] == "autoscaling"
    assert "endpointslices" in {
        r["name"] for r in kube_http.get("/apis/discovery.k8s.io/v1").json()["resources"]
    }
    assert kube_http.get("/apis/example.com/v1").status_code == 404


def test_a_crd_created_through_the_api_becomes_served(
    kube: KubeTestServer, kube_http: httpx.Client, api: client.ApiClient
) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(WIDGETS_CRD)
    crd = kube_http.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com").json()
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    assert "example.com" in {g["name"] for g in kube_http.get("/apis").json()["groups"]}
    served = {r["name"]: r for r in kube_http.get("/apis/example.com/v1").json()["resources"]}
    assert served["widgets"]["namespaced"] is True
    assert served["widgets"]["shortNames"] == ["wd"]
    assert {"widgets/status", "widgets/scale"} <= set(served)
    client.CustomObjectsApi(api).create_namespaced_custom_object(*WIDGETS, widget("w1"))
    ext.delete_custom_resource_definition("widgets.example.com")
    assert kube_http.get("/apis/example.com/v1").status_code == 404
    assert kube_http.get("/apis/example.com/v1/namespaces/default/widgets/w1").status_code == 404


def test_a_crd_with_a_rule_the_server_cannot_evaluate_is_refused(api: client.ApiClient) -> None:
    crd = json.loads(json.dumps(WIDGETS_CRD))
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [{"rule": "self.color.lowerAscii().quantity() == 1"}]
    code, status = failure(client.ApiextensionsV1Api(api).create_custom_resource_definition, crd)
    assert code == 422
    assert status["reason"] == "Invalid"
    assert "'lowerAscii' is not supported" in status["message"]


# --- objects -------------------------------------------------------------------------------------------


def test_create_sets_uid_timestamp_and_one_global_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    a = core.create_namespaced_config_map("default", cm("a"))
    b = core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert a.metadata.uid
    assert a.metadata.uid != b.metadata.uid
    assert a.metadata.creation_timestamp is not None
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert a.metadata.generation is None  # ConfigMaps have none
    listed = core.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) >= int(b.metadata.resource_version)
    assert [i.metadata.name for i in listed.items] == ["a"]


def test_generate_name_makes_a_unique_name(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    names = {
        core.create_namespaced_config_map("default", {"metadata": {"generateName": "job-"}}).metadata.name
        for _ in range(5)
    }
    assert len(names) == 5
    assert all(n.startswith("job-") and len(n) == len("job-") + 5 for n in names)


def test_errors_are_status_bodies_like_the_real_ones(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    code, status = failure(core.read_namespaced_config_map, "missing", "default")
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'configmaps "missing" not found')
    assert status["details"] == {"name": "missing", "kind": "configmaps"}
    assert status["kind"] == "Status"
    core.create_namespaced_config_map("default", cm("a"))
    code, status = failure(core.create_namespaced_config_map, "default", cm("a"))
    assert (code, status["reason"], status["message"]) == (
        409,
        "AlreadyExists",
        'configmaps "a" already exists',
    )
    code, status = failure(core.create_namespaced_config_map, "default", cm("Not_Valid"))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert status["message"].startswith('ConfigMap "Not_Valid" is invalid: metadata.name: Invalid value')
    code, status = failure(core.create_namespaced_config_map, "nowhere", cm("a"))
    assert (code, status["message"]) == (404, 'namespaces "nowhere" not found')


def test_update_needs_a_fresh_resource_version_and_custom_resources_need_one(
    api: client.ApiClient, widgets: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("default", cm("a"))
    core.replace_namespaced_config_map("a", "default", {"metadata": {"name": "a"}, "data": {"k": "2"}})
    code, status = failure(
        core.replace_namespaced_config_map,
        "a",
        "default",
        {"metadata": {"name": "a", "resourceVersion": first.metadata.resource_version}},
    )
    assert (code, status["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status["message"]
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    code, status = failure(custom.replace_namespaced_custom_object, *WIDGETS, "w", widget("w", color="blue"))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_generation_moves_on_spec_changes_only(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api)
    args = (*WIDGETS, "w")
    custom.create_namespaced_custom_object(*WIDGETS, widget("w"))

    def generation() -> int:
        got = custom.get_namespaced_custom_object(*args)
        return int(got["metadata"]["generation"])

    assert generation() == 1
    custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE)
    custom.patch_namespaced_custom_object(
        *args, {"metadata": {"annotations": {"a": "b"}}}, _content_type=MERGE
    )
    custom.patch_namespaced_custom_object_status(*args, {"status": {"replicas": 3}}, _content_type=MERGE)
    assert generation() == 1
    custom.patch_namespaced_custom_object(*args, {"spec": {"replicas": 2}}, _content_type=MERGE)
    assert generation() == 2
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment(APP))
    apps.patch_namespaced_deployment(
        "web", "default", {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE
    )
    assert apps.read_namespaced_deployment("web", "default").metadata.generation == 1
    # The Deployment strategy, unlike a custom resource's, counts annotations as part of the spec.
    apps.patch_namespaced_deployment(
        "web", "default", {"metadata": {"annotations": {"x": "y"}}}, _content_type=MERGE
    )
    assert apps.read_namespaced_deployment("web", "default").metadata.generation == 2


def test_status_subresource_splits_the_writes(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api)
    args = (*WIDGETS, "w")
    created = custom.create_namespaced_custom_object(*WIDGETS, {**widget("w"), "status": {"replicas": 9}})
    assert "status" not in created  # ignored on create, as with the real status subresource
    custom.patch_namespaced_custom_object(
        *args, {"spec": {"color": "blue"}, "status": {"replicas": 5}}, _content_type=MERGE
    )
    custom.patch_namespaced_custom_object_status(
        *args, {"spec": {"color": "red"}, "status": {"replicas": 2}}, _content_type=MERGE
    )
    got = custom.get_namespaced_custom_object(*args)
    assert got["spec"]["color"] == "blue"
    assert got["status"] == {"replicas": 2}


def test_schema_validation_defaults_and_cel(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api)
    made = custom.create_namespaced_custom_object(
        *WIDGETS, {**widget("w"), "extra": 1, "spec": {"color": "red", "unknown": 2}}
    )
    assert made["spec"] == {"color": "red", "replicas": 1, "minSize": 1, "maxSize": 4}  # defaulted and pruned
    assert "extra" not in made
    code, status = failure(
        custom.create_namespaced_custom_object,
        *WIDGETS,
        {**widget("bad"), "spec": {"color": "green", "replicas": 11}},
    )
    assert code == 422
    fields = {c["field"]: c["reason"] for c in status["details"]["causes"]}
    assert (
        fields.items()
        >= {"spec.color": "FieldValueNotSupported", "spec.replicas": "FieldValueInvalid"}.items()
    )
    # As the real server: CEL rules wait until the schema errors are fixed, and it says so.
    assert "some validation rules were not checked" in status["message"]
    code, status = failure(custom.create_namespaced_custom_object, *WIDGETS, {**widget("x"), "spec": {}})
    assert status["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.color",
    }
    code, status = failure(
        custom.create_namespaced_custom_object, *WIDGETS, widget("y", minSize=5, maxSize=2)
    )
    assert code == 422
    assert "minSize must not exceed maxSize" in status["message"]


# --- patches -------------------------------------------------------------------------------------------


def test_json_patch_test_op_guards_like_kopf_expects(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api)
    args = (*WIDGETS, "w")
    made = custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    version = made["metadata"]["resourceVersion"]
    add = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/x"]},
    ]
    patched = custom.patch_namespaced_custom_object(*args, add, _content_type=JSON_PATCH)
    assert patched["metadata"]["finalizers"] == ["example.com/x"]
    code, _status = failure(custom.patch_namespaced_custom_object, *args, add, _content_type=JSON_PATCH)
    assert code == 422  # the version moved on: kopf retries on exactly this answer


def test_strategic_merge_patch_merges_containers_and_env_by_name(
    api: client.ApiClient, widgets: dict[str, Any]
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment(APP))
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "3"}]}]}}
        }
    }
    apps.patch_namespaced_deployment("web", "default", patch, _content_type=STRATEGIC)
    container = apps.read_namespaced_deployment("web", "default").spec.template.spec.containers[0]
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "3")]
    assert container.image == "app:1"
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    code, status = failure(
        custom.patch_namespaced_custom_object,
        *WIDGETS,
        "w",
        {"spec": {"color": "blue"}},
        _content_type=STRATEGIC,
    )
    assert (code, status["reason"]) == (415, "UnsupportedMediaType")


def test_a_patch_naming_an_old_resource_version_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("default", cm("a"))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}}, _content_type=MERGE)
    code, status = failure(
        core.patch_namespaced_config_map,
        "a",
        "default",
        {"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"k": "3"}},
        _content_type=MERGE,
    )
    assert (code, status["reason"]) == (409, "Conflict")


def test_the_clients_default_patch_types_work(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    """A dict goes as a strategic merge patch to built-ins and as a merge patch to custom objects."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a"))
    assert core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}}).data == {"k": "2"}
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    patched = custom.patch_namespaced_custom_object(*WIDGETS, "w", {"spec": {"color": "blue"}})
    assert patched["spec"]["color"] == "blue"
    answer = httpx.patch(
        f"{api.configuration.host}/api/v1/namespaces/default/configmaps/a",
        content=b'{"data": {}}',
        headers={"Content-Type": JSON_PATCH},
    )
    assert answer.status_code == 400  # an object is no JSON patch


# --- scale ---------------------------------------------------------------------------------------------


def test_scale_subresource_of_a_deployment_and_a_custom_resource(
    api: client.ApiClient, widgets: dict[str, Any]
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment(APP, replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}}, _content_type=MERGE)
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 5
    custom = client.CustomObjectsApi(api)
    args = (*WIDGETS, "w")
    custom.create_namespaced_custom_object(*WIDGETS, widget("w", replicas=1))
    custom.patch_namespaced_custom_object_status(
        *args, {"status": {"replicas": 1, "selector": "app=w"}}, _content_type=MERGE
    )
    custom.patch_namespaced_custom_object_scale(*args, {"spec": {"replicas": 3}}, _content_type=MERGE)
    got = custom.get_namespaced_custom_object_scale(*args)
    assert got["spec"] == {"replicas": 3}
    assert got["status"] == {"replicas": 1, "selector": "app=w"}
    code, _ = failure(
        custom.patch_namespaced_custom_object_scale, *args, {"spec": {"replicas": 11}}, _content_type=MERGE
    )
    assert code == 422  # the CRD schema's maximum holds through /scale too


# --- selectors and paging ------------------------------------------------------------------------------


def test_label_and_field_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a", tier="web", env="prod"))
    core.create_namespaced_config_map("default", cm("b", tier="db", env="prod"))
    core.create_namespaced_config_map("default", cm("c", tier="web"))

    def names(**kw: Any) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map("default", **kw).items]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier in (web,db),env") == ["a", "b"]
    assert names(label_selector="!env") == ["c"]
    assert names(field_selector="metadata.name!=a") == ["b", "c"]
    code, status = failure(core.list_namespaced_config_map, "default", field_selector="data.k=v")
    assert code == 400
    assert "data.k" in status["message"]


def test_a_crds_selectable_fields_select_over_http(api: client.ApiClient, widgets: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*WIDGETS, widget("r"))
    custom.create_namespaced_custom_object(*WIDGETS, widget("b", color="blue"))

    def names(selector: str) -> list[str]:
        found = custom.list_namespaced_custom_object(*WIDGETS, field_selector=selector)
        return [i["metadata"]["name"] for i in found["items"]]

    assert names("spec.color=blue") == ["b"]
    assert names("spec.color!=blue,metadata.name=r") == ["r"]
    # Only the fields the CRD lists: spec.replicas is in the schema but not selectable.
    code, status = failure(custom.list_namespaced_custom_object, *WIDGETS, field_selector="spec.replicas=1")
    assert code == 400
    assert status["message"] == "field label not supported: spec.replicas"


def test_list_pages_with_limit_and_continue(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for i in range(5):
        core.create_namespaced_config_map("default", cm(f"c{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["c0", "c1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c2", "c3", "c4"]
    assert not rest.metadata._continue


# --- watch ---------------------------------------------------------------------------------------------


def watch_lines(kube: KubeTestServer, path: str, **params: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=kube.url, timeout=10) as http:
        answer = http.get(path, params={"watch": "true", **params})
    assert answer.status_code == 200
    return [json.loads(line) for line in answer.text.splitlines() if line]


def test_watch_from_a_version_replays_what_followed(api: client.ApiClient, kube: KubeTestServer) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("default", cm("a"))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}}, _content_type=MERGE)
    core.delete_namespaced_config_map("a", "default")
    events = watch_lines(
        kube,
        "/api/v1/namespaces/default/configmaps",
        timeoutSeconds="1",
        resourceVersion=first.metadata.resource_version,
    )
    assert [(e["type"], e["object"]["data"]["k"]) for e in events] == [("MODIFIED", "2"), ("DELETED", "2")]
    assert events[0]["object"]["kind"] == "ConfigMap"


def test_watch_without_a_version_starts_with_the_current_objects(
    api: client.ApiClient, kube: KubeTestServer
) -> None:
    client.CoreV1Api(api).create_namespaced_config_map("default", cm("a"))
    events = watch_lines(
        kube, "/api/v1/namespaces/default/configmaps", timeoutSeconds="0.5", resourceVersion="0"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    initial = watch_lines(
        kube,
        "/api/v1/namespaces/default/configmaps",
        timeoutSeconds="0.5",
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    )
    assert initial[0]["type"] == "ADDED"
    assert initial[1]["type"] == "BOOKMARK"
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_bookmarks_and_timeout(kube: KubeTestServer) -> None:
    started = time.monotonic()
    events = watch_lines(
        kube,
        "/api/v1/namespaces/default/configmaps",
        timeoutSeconds="1",
        allowWatchBookmarks="true",
        resourceVersion=str(kube.call(lambda s: s.revision)),
    )
    assert time.monotonic() - started >= 0.9
    assert events
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert events[0]["object"]["metadata"]["resourceVersion"]


def test_an_expired_version_is_200_then_one_error_event(api: client.ApiClient, kube: KubeTestServer) -> None:
    made = client.CoreV1Api(api).create_namespaced_config_map("default", cm("a"))
    client.CoreV1Api(api).create_namespaced_config_map("default", cm("b"))
    kube.compact()
    events = watch_lines(
        kube, "/api/v1/namespaces/default/configmaps", resourceVersion=made.metadata.resource_version
    )
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


def test_a_label_selected_watch_sees_objects_enter_and_leave(
    api: client.ApiClient, kube: KubeTestServer
) -> None:
    core = client.CoreV1Api(api)
    made = core.create_namespaced_config_map("default", cm("a", role="x"))
    core.patch_namespaced_config_map(
        "a", "default", {"metadata": {"labels": {"role": "y"}}}, _content_type=MERGE
    )
    core.patch_namespaced_config_map(
        "a", "default", {"metadata": {"labels": {"role": "x"}}}, _content_type=MERGE
    )
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}}, _content_type=MERGE)
    events = watch_lines(
        kube,
        "/api/v1/namespaces/default/configmaps",
        timeoutSeconds="0.5",
        labelSelector="role=x",
        resourceVersion=made.metadata.resource_version,
    )
    assert [e["type"] for e in events] == ["DELETED", "ADDED", "MODIFIED"]


def test_a_test_can_drop_watch_streams(kube: KubeTestServer, kube_http: httpx.Client) -> None:
    import threading

    outcome: list[str] = []

    def watch() -> None:
        try:
            with httpx.Client(base_url=kube.url, timeout=10) as http:
                http.get("/api/v1/configmaps", params={"watch": "true", "resourceVersion": "0"}).read()
            outcome.append("ended")
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=watch)
    thread.start()
    wait_until(lambda: kube.call(lambda _: len(kube.state.watch_drops)) > 0, timeout=5)
    assert kube.drop_watches() == 1
    thread.join(timeout=5)
    assert outcome
    assert outcome[0] != "ended"


# --- faults and evidence -------------------------------------------------------------------------------


def test_injected_faults_answer_then_clear(api: client.ApiClient, kube: KubeTestServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a"))
    kube.inject_fault(503, method="GET", path="/configmaps/a$", times=2)
    for _ in range(2):
        code, status = failure(core.read_namespaced_config_map, "a", "default")
        assert (code, status["reason"]) == (503, "ServiceUnavailable")
    assert core.read_namespaced_config_map("a", "default").metadata.name == "a"


def test_every_request_is_recorded_in_rbac_terms(
    api: client.ApiClient, kube: KubeTestServer, widgets: dict[str, Any]
) -> None:
    kube.clear_evidence()
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a"))
    core.list_config_map_for_all_namespaces()
    client.CustomObjectsApi(api).create_namespaced_custom_object(*WIDGETS, widget("w"))
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        *WIDGETS, "w", {"status": {"replicas": 1}}, _content_type=MERGE
    )
    core.delete_namespaced_config_map("a", "default")
    assert kube.evidence == [
        Request("create", "", "configmaps", "", "default"),
        Request("list", "", "configmaps", "", ""),
        Request("create", "example.com", "widgets", "", "default"),
        Request("patch", "example.com", "widgets", "status", "default", "w"),
        Request("delete", "", "configmaps", "", "default", "a"),
    ]


# --- deletion ------------------------------------------------------------------------------------------


def test_delete_answers_status_for_most_kinds_and_the_object_for_pods(kube_http: httpx.Client) -> None:
    kube_http.post("/api/v1/namespaces/default/configmaps", json=cm("a")).raise_for_status()
    gone = kube_http.delete("/api/v1/namespaces/default/configmaps/a").json()
    assert gone["kind"] == "Status"
    assert gone["status"] == "Success"
    assert gone["details"]["name"] == "a"
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    kube_http.post("/api/v1/namespaces/default/pods", json=pod).raise_for_status()
    assert kube_http.delete("/api/v1/namespaces/default/pods/p").json()["kind"] == "Pod"


def test_finalizers_hold_a_deletion_until_removed(api: client.ApiClient, kube: KubeTestServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {**cm("a"), "metadata": {"name": "a", "finalizers": ["x/y"]}}
    )
    held = core.delete_namespaced_config_map("a", "default")
    assert held["metadata"]["deletionTimestamp"]  # the object, not a Status: it is still there
    code, status = failure(
        core.patch_namespaced_config_map,
        "a",
        "default",
        {"metadata": {"finalizers": ["x/y", "x/z"]}},
        _content_type=MERGE,
    )
    assert code == 422
    assert "no new finalizers" in status["message"]
    core.patch_namespaced_config_map(
        "a", "default", [{"op": "remove", "path": "/metadata/finalizers/0"}], _content_type=JSON_PATCH
    )
    code, _ = failure(core.read_namespaced_config_map, "a", "default")
    assert code == 404


def owned(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


@pytest.mark.parametrize(
    ("policy", "survives"), [("Background", False), ("Foreground", False), ("Orphan", True)]
)
def test_owner_reference_cascade(
    api: client.ApiClient, widgets: dict[str, Any], policy: str, survives: bool
) -> None:
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    owner = custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    core.create_namespaced_config_map("default", owned("child", owner))
    custom.delete_namespaced_custom_object(*WIDGETS, "w", propagation_policy=policy)
    children = [i.metadata for i in core.list_namespaced_config_map("default").items]
    assert [c.name for c in children] == (["child"] if survives else [])
    if survives:
        assert not children[0].owner_references
    code, _ = failure(custom.get_namespaced_custom_object, *WIDGETS, "w")
    assert code == 404


def test_deleting_a_namespace_deletes_what_is_in_it(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_config_map("team", {**cm("a"), "metadata": {"name": "a", "finalizers": ["x/y"]}})
    core.delete_namespace("team")
    assert core.read_namespace("team").status.phase == "Terminating"
    code, status = failure(core.create_namespaced_config_map, "team", cm("b"))
    assert code == 403
    assert "being terminated" in status["message"]
    core.patch_namespaced_config_map("a", "team", {"metadata": {"finalizers": None}}, _content_type=MERGE)
    code, _ = failure(core.read_namespace, "team")
    assert code == 404


# --- tables, for kubectl get -----------------------------------------------------------------------------


def test_table_output_carries_the_printer_columns(kube: KubeTestServer, widgets: dict[str, Any]) -> None:
    kube.apply(widget("w", replicas=2))
    with httpx.Client(base_url=kube.url) as http:
        table = http.get(
            "/apis/example.com/v1/namespaces/default/widgets",
            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        ).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Color", "Replicas", "Ready", "Age"]
    assert table["rows"][0]["cells"][:4] == ["w", "red", 2, ""]


# --- found in review: dry runs, second deletes, pods, scope ----------------------------------------------


def test_dry_run_changes_nothing(kube_http: httpx.Client) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    kube_http.post(url, json=cm("a")).raise_for_status()
    dry = {"dryRun": "All"}
    patched = kube_http.patch(
        f"{url}/a", params=dry, json={"data": {"k": "2"}}, headers={"Content-Type": MERGE}
    ).json()
    assert patched["data"] == {"k": "2"}  # the answer is what the write would give...
    replaced = kube_http.put(f"{url}/a", params=dry, json={**cm("a", x="y"), "data": {"k": "3"}}).json()
    assert replaced["metadata"]["labels"] == {"x": "y"}
    assert kube_http.delete(f"{url}/a", params=dry).json()["status"] == "Success"
    assert kube_http.get(f"{url}/a").json()["data"] == {"k": "v"}  # ...and nothing was stored


def test_a_shorter_grace_wins_and_the_last_finalizer_ends_it(
    kube: KubeTestServer, kube_http: httpx.Client
) -> None:
    kube.call(lambda store: setattr(store, "graceful_pods", True))  # as when a kubelet runs
    pod = {
        "metadata": {"name": "p", "finalizers": ["x/y"]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
    }
    url = "/api/v1/namespaces/default/pods"
    kube_http.post(url, json=pod).raise_for_status()
    held = kube_http.delete(f"{url}/p").json()
    assert held["metadata"]["deletionGracePeriodSeconds"] == 30
    forced = kube_http.delete(f"{url}/p", params={"gracePeriodSeconds": "0"}).json()
    assert forced["metadata"]["deletionGracePeriodSeconds"] == 0  # still held by its finalizer
    kube_http.patch(
        f"{url}/p", json={"metadata": {"finalizers": None}}, headers={"Content-Type": MERGE}
    ).raise_for_status()
    assert kube_http.get(f"{url}/p").status_code == 404


def test_a_pod_spec_is_immutable_but_for_images(kube_http: httpx.Client) -> None:
    url = "/api/v1/namespaces/default/pods"
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}}
    kube_http.post(url, json=pod).raise_for_status()
    env = {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}
    refused = kube_http.patch(f"{url}/p", json=env, headers={"Content-Type": STRATEGIC})
    assert refused.status_code == 422
    assert "pod updates may not change fields" in refused.json()["message"]
    image = {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}
    assert kube_http.patch(f"{url}/p", json=image, headers={"Content-Type": STRATEGIC}).status_code == 200


def test_custom_resource_without_status_subresource_counts_status_in_generation(
    api: client.ApiClient, kube: KubeTestServer
) -> None:
    crd = json.loads(json.dumps(WIDGETS_CRD).replace("widget", "gadget").replace("Widget", "Gadget"))
    del crd["spec"]["versions"][0]["subresources"]
    kube.apply(crd)
    custom = client.CustomObjectsApi(api)
    args = ("example.com", "v1", "default", "gadgets")
    custom.create_namespaced_custom_object(*args, {**widget("g"), "kind": "Gadget"})
    custom.patch_namespaced_custom_object(*args, "g", {"status": {"replicas": 2}}, _content_type=MERGE)
    got = custom.get_namespaced_custom_object(*args, "g")
    assert got["status"] == {"replicas": 2}
    assert got["metadata"]["generation"] == 2


def test_foreground_deletion_waits_for_a_held_dependent(
    api: client.ApiClient, widgets: dict[str, Any]
) -> None:
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    args = (*WIDGETS, "w")
    owner = custom.create_namespaced_custom_object(*WIDGETS, widget("w"))
    child = owned("child", owner)
    child["metadata"]["finalizers"] = ["x/hold"]
    core.create_namespaced_config_map("default", child)
    custom.delete_namespaced_custom_object(*args, propagation_policy="Foreground")
    waiting = custom.get_namespaced_custom_object(*args)
    assert "foregroundDeletion" in waiting["metadata"]["finalizers"]
    core.patch_namespaced_config_map(
        "child", "default", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    code, _ = failure(custom.get_namespaced_custom_object, *args)
    assert code == 404


def test_create_needs_the_path_of_its_scope(kube_http: httpx.Client) -> None:
    assert kube_http.post("/api/v1/configmaps", json=cm("a")).status_code == 404
    assert kube_http.post("/api/v1/namespaces/default/namespaces", json=cm("n")).status_code == 404


def test_a_faulted_request_is_still_evidence(api: client.ApiClient, kube: KubeTestServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a"))
    kube.clear_evidence()
    kube.inject_fault(409, method="PATCH", path="/configmaps/a$")
    code, status = failure(core.patch_namespaced_config_map, "a", "default", {"data": {"k": "2"}})
    assert (code, status["reason"]) == (409, "Conflict")
    assert kube.evidence == [Request("patch", "", "configmaps", "", "default", "a")]
