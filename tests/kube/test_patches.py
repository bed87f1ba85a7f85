"""The three PATCH formats: RFC 7386 and RFC 6902 examples, strategic merge rules, purity."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube_test_server.errors import ApiError
from kube_test_server.patches import json_patch, merge_patch, patch_kind, strategic_merge_patch

# --- patch_kind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/merge-patch+json", "merge"),
        ("application/json-patch+json", "json"),
        ("application/strategic-merge-patch+json", "strategic"),
        ("application/apply-patch+yaml", "apply"),
        ("application/merge-patch+json; charset=utf-8", "merge"),
        ("Application/JSON-Patch+JSON ;charset=UTF-8", "json"),
    ],
)
def test_patch_kind_names_the_format(content_type: str, kind: str) -> None:
    assert patch_kind(content_type) == kind


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", "application/yaml"])
def test_patch_kind_refuses_other_media_types_with_415(content_type: str) -> None:
    with pytest.raises(ApiError) as raised:
        patch_kind(content_type)
    assert raised.value.code == 415
    assert raised.value.reason == "UnsupportedMediaType"
    assert raised.value.message.endswith(f"got {content_type}")


# --- merge_patch: RFC 7386 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # RFC 7386 appendix A, in order.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # RFC 7386 section 3.
        (
            {
                "title": "Goodbye!",
                "author": {"givenName": "John", "familyName": "Doe"},
                "tags": ["example", "sample"],
            },
            {
                "title": "Hello!",
                "phoneNumber": "+01-123-456-7890",
                "author": {"familyName": None},
                "tags": ["example"],
            },
            {
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "phoneNumber": "+01-123-456-7890",
            },
        ),
        # Absent key deleted: nothing to do.
        ({"a": 1}, {"zz": None}, {"a": 1}),
        # Lists are replaced whole, even lists the strategic patch would merge.
        (
            {"metadata": {"finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b"]}},
            {"metadata": {"finalizers": ["b"]}},
        ),
    ],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


# --- json_patch: RFC 6902 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "operations", "expected"),
    [
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
            id="A.1",
        ),
        pytest.param(
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
            id="A.2",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}, id="A.3"
        ),
        pytest.param(
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
            id="A.4",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
            id="A.5",
        ),
        pytest.param(
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
            id="A.6",
        ),
        pytest.param(
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
            id="A.7",
        ),
        pytest.param(
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
            {"baz": "qux", "foo": ["a", 2, "c"]},
            id="A.8",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
            id="A.10",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
            id="A.11",
        ),
        pytest.param(
            {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}, id="A.14"
        ),
        pytest.param(
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
            id="A.16",
        ),
        pytest.param(
            {"a/b": 1}, [{"op": "replace", "path": "/a~1b", "value": 2}], {"a/b": 2}, id="tilde-1-escape"
        ),
        pytest.param({"m~n": 1}, [{"op": "remove", "path": "/m~0n"}], {}, id="tilde-0-escape"),
        pytest.param(
            {"a": {"b": [1]}, "c": None},
            [{"op": "copy", "from": "/a", "path": "/c"}],
            {"a": {"b": [1]}, "c": {"b": [1]}},
            id="copy",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "copy", "from": "/a/0", "path": "/a/-"}],
            {"a": [1, 2, 1]},
            id="copy-append",
        ),
        pytest.param(
            {"a": []}, [{"op": "add", "path": "/a/0", "value": 1}], {"a": [1]}, id="add-at-end-by-index"
        ),
        pytest.param({"a": 1}, [{"op": "add", "path": "/a", "value": 2}], {"a": 2}, id="add-replaces-member"),
        pytest.param({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1], id="replace-root"),
        pytest.param({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}], {"b": 2}, id="add-root"),
        pytest.param({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}, id="move-to-itself"),
        pytest.param({"a": 1}, [], {"a": 1}, id="no-operations"),
        pytest.param(
            {"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}], {"a": 1}, id="test-int-equals-float"
        ),
        pytest.param(
            {"a": {"x": [1, {"y": None}]}},
            [{"op": "test", "path": "/a", "value": {"x": [1, {"y": None}]}}],
            {"a": {"x": [1, {"y": None}]}},
            id="test-deep-equal",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "test", "path": "/missing", "value": None}],
            {"a": 1},
            id="test-null-matches-missing",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "add", "path": "/b", "value": 2}, {"op": "move", "from": "/b", "path": "/c"}],
            {"a": 1, "c": 2},
            id="operations-in-order",
        ),
    ],
)
def test_json_patch(target: Any, operations: list[dict[str, Any]], expected: Any) -> None:
    assert json_patch(target, operations) == expected


def test_kopf_finalizer_pattern_removes_by_index_after_a_test() -> None:
    finalizers = ["kopf.zalando.org/KopfFinalizerMarker", "other.example.com/keep"]
    obj = {"metadata": {"name": "x", "finalizers": finalizers}}
    operations = [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    assert json_patch(obj, operations) == {
        "metadata": {"name": "x", "finalizers": ["other.example.com/keep"]}
    }


def test_kopf_finalizer_pattern_fails_when_the_list_changed_meanwhile() -> None:
    obj = {"metadata": {"finalizers": ["someone-else", "kopf.zalando.org/KopfFinalizerMarker"]}}
    operations = [
        {"op": "test", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/KopfFinalizerMarker"]},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    with pytest.raises(ApiError) as raised:
        json_patch(obj, operations)
    error = raised.value
    assert (error.code, error.reason) == (422, "Invalid")
    assert "testing value /metadata/finalizers failed" in error.message
    assert error.message.startswith("the server rejected our request due to an error in our request")
    assert error.details["causes"][0]["reason"] == "UnexpectedServerResponse"
    assert obj["metadata"]["finalizers"] == ["someone-else", "kopf.zalando.org/KopfFinalizerMarker"]


@pytest.mark.parametrize(
    ("target", "operations", "in_message"),
    [
        pytest.param(
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            "testing value /baz failed",
            id="A.9",
        ),
        pytest.param(
            {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "/baz/bat", id="A.12"
        ),
        pytest.param(
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            "testing value /~01",
            id="A.15",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "test", "path": "/a", "value": True}],
            "testing value /a",
            id="test-true-is-not-1",
        ),
        pytest.param(
            {"a": True},
            [{"op": "test", "path": "/a", "value": 1}],
            "testing value /a",
            id="test-1-is-not-true",
        ),
        pytest.param(
            {"a": 1}, [{"op": "test", "path": "/b", "value": 1}], "testing value /b", id="test-missing-path"
        ),
        pytest.param({"a": 1}, [{"op": "remove", "path": "/b"}], "/b", id="remove-missing-key"),
        pytest.param({"a": [1]}, [{"op": "remove", "path": "/a/1"}], "/a/1", id="remove-index-out-of-range"),
        pytest.param({"a": [1]}, [{"op": "remove", "path": "/a/-"}], "/a/-", id="remove-dash"),
        pytest.param({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}], "/b", id="replace-missing-key"),
        pytest.param(
            {"a": [1]}, [{"op": "add", "path": "/a/2", "value": 2}], "/a/2", id="add-index-past-end"
        ),
        pytest.param(
            {"a": [1, 2]}, [{"op": "add", "path": "/a/01", "value": 2}], "/a/01", id="leading-zero-index"
        ),
        pytest.param(
            {"a": [1, 2]}, [{"op": "add", "path": "/a/-1", "value": 2}], "/a/-1", id="negative-index"
        ),
        pytest.param({"a": 1}, [{"op": "add", "path": "/a/b", "value": 2}], "/a/b", id="add-under-a-scalar"),
        pytest.param({"a": 1}, [{"op": "add", "path": "a", "value": 2}], "'a'", id="pointer-without-slash"),
        pytest.param({"a": 1}, [{"op": "add", "path": "/a~2", "value": 2}], "/a~2", id="bad-escape"),
        pytest.param({"a": 1}, [{"op": "frobnicate", "path": "/a"}], "frobnicate", id="unknown-op"),
        pytest.param({"a": 1}, [{"path": "/a", "value": 1}], "None", id="missing-op"),
        pytest.param({"a": 1}, [{"op": "remove"}], "'path'", id="missing-path"),
        pytest.param({"a": 1}, [{"op": "add", "path": "/b"}], "value", id="missing-value"),
        pytest.param({"a": 1}, [{"op": "move", "path": "/b"}], "'from'", id="missing-from"),
        pytest.param(
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/b/c"}],
            "own child",
            id="move-into-child",
        ),
        pytest.param({"a": 1}, [{"op": "copy", "from": "/x", "path": "/b"}], "/x", id="copy-from-missing"),
        pytest.param({"a": 1}, [{"op": "remove", "path": ""}], "whole document", id="remove-root"),
        pytest.param(
            {"a": 1},
            [{"op": "add", "path": "/b", "value": 1}, {"op": "remove", "path": "/zz"}],
            "(operation 1)",
            id="names-the-failing-operation",
        ),
    ],
)
def test_json_patch_that_cannot_apply_is_422(target: Any, operations: list[Any], in_message: str) -> None:
    before = copy.deepcopy(target)
    with pytest.raises(ApiError) as raised:
        json_patch(target, operations)
    assert (raised.value.code, raised.value.reason) == (422, "Invalid")
    assert in_message in raised.value.message
    assert target == before


@pytest.mark.parametrize(
    "operations",
    [
        {"op": "add", "path": "/a", "value": 1},
        "add",
        None,
        3,
        [["op", "add"]],
        [{"op": "test", "path": "/a", "value": 1}, 7],
    ],
)
def test_json_patch_body_that_is_not_a_list_of_objects_is_400(operations: Any) -> None:
    with pytest.raises(ApiError) as raised:
        json_patch({"a": 1}, operations)
    assert (raised.value.code, raised.value.reason) == (400, "BadRequest")
    assert "cannot unmarshal" in raised.value.message


# --- strategic_merge_patch ----------------------------------------------------------------------


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": f"{name}:1", **fields}


def deployment(*containers: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", **metadata},
        "spec": {
            "replicas": 1,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": list(containers)}},
        },
    }


def pod_spec_patch(*containers: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": list(containers), **more}}}}


def containers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def env(**values: str) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


APP = container("app", env=env(A="1", B="2"), ports=[{"containerPort": 8000, "name": "http"}])
SIDECAR = container("sidecar", env=env(X="x"))


@pytest.mark.parametrize(
    ("target", "patch", "expected_containers"),
    [
        pytest.param(
            deployment(APP, SIDECAR),
            pod_spec_patch({"name": "app", "env": env(B="3", C="4")}),
            [container("app", env=env(A="1", B="3", C="4"), ports=APP["ports"]), SIDECAR],
            id="env-merged-by-name-one-container-changed-other-kept",
        ),
        pytest.param(
            deployment(APP, SIDECAR),
            pod_spec_patch({"name": "app", "image": "app:2"}),
            [{**APP, "image": "app:2"}, SIDECAR],
            id="container-merged-by-name",
        ),
        pytest.param(
            deployment(APP, SIDECAR),
            pod_spec_patch({"name": "sidecar", "$patch": "delete"}),
            [APP],
            id="patch-delete-removes-a-container",
        ),
        pytest.param(
            deployment(APP, SIDECAR),
            pod_spec_patch({"name": "nope", "$patch": "delete"}),
            [APP, SIDECAR],
            id="patch-delete-of-an-absent-container-is-a-no-op",
        ),
        pytest.param(
            deployment(APP, SIDECAR),
            pod_spec_patch(container("only"), {"$patch": "replace"}),
            [container("only")],
            id="patch-replace-replaces-the-list",
        ),
        pytest.param(
            deployment(APP),
            pod_spec_patch(
                {
                    "name": "app",
                    "ports": [{"containerPort": 8000, "protocol": "TCP"}, {"containerPort": 9090}],
                }
            ),
            [
                {
                    **APP,
                    "ports": [
                        {"containerPort": 8000, "name": "http", "protocol": "TCP"},
                        {"containerPort": 9090},
                    ],
                }
            ],
            id="ports-merged-by-container-port",
        ),
        pytest.param(
            deployment(container("app", volumeMounts=[{"mountPath": "/data", "name": "a"}])),
            pod_spec_patch({"name": "app", "volumeMounts": [{"mountPath": "/data", "readOnly": True}]}),
            [container("app", volumeMounts=[{"mountPath": "/data", "name": "a", "readOnly": True}])],
            id="volume-mounts-merged-by-mount-path",
        ),
        pytest.param(
            deployment(container("app", env=env(A="1", B="2"))),
            pod_spec_patch(
                {
                    "name": "app",
                    "env": [{"name": "A", "value": None, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                }
            ),
            [
                container(
                    "app", env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}, *env(B="2")]
                )
            ],
            id="null-inside-a-merged-element-deletes-the-field",
        ),
        pytest.param(
            deployment(container("app", args=["a", "b"])),
            pod_spec_patch({"name": "app", "args": ["c"]}),
            [container("app", args=["c"])],
            id="list-without-strategy-replaced",
        ),
        pytest.param(
            deployment(container("app", env=env(A="1"))),
            pod_spec_patch({"name": "app", "env": [{"name": "A", "$patch": "delete"}, *env(Z="9")]}),
            [container("app", env=env(Z="9"))],
            id="delete-and-add-in-one-list",
        ),
    ],
)
def test_strategic_containers(
    target: dict[str, Any], patch: dict[str, Any], expected_containers: list[Any]
) -> None:
    assert containers_of(strategic_merge_patch(target, patch, "Deployment")) == expected_containers


# The real server (strategicpatch's normalizeElementOrder) keeps the patch's order for items it names
# and the server's order for the rest, so an item new to the server goes before the server-only items
# after it: a lone addition lands first.
@pytest.mark.parametrize(
    ("server", "patch", "expected"),
    [
        pytest.param(["a"], ["z"], ["z", "a"], id="new-item-first"),
        pytest.param(["a", "b"], ["b", "c"], ["a", "b", "c"], id="new-item-after-the-patched-item"),
        pytest.param(
            ["a", "b", "c"], ["b", "d"], ["a", "b", "d", "c"], id="new-item-before-later-server-items"
        ),
        pytest.param(["a", "b"], ["b", "a"], ["b", "a"], id="patch-order-of-named-items-wins"),
        pytest.param(["a", "b", "c"], ["c"], ["a", "b", "c"], id="server-order-of-other-items-kept"),
        pytest.param(["a", "b"], ["a", "a"], ["a", "b"], id="duplicates-collapsed"),
    ],
)
def test_strategic_list_order_follows_the_real_server(
    server: list[str], patch: list[str], expected: list[str]
) -> None:
    merged = strategic_merge_patch(
        {"metadata": {"finalizers": server}}, {"metadata": {"finalizers": patch}}, "ConfigMap"
    )
    assert merged["metadata"]["finalizers"] == expected
    containers = strategic_merge_patch(
        deployment(*(container(n) for n in server)),
        pod_spec_patch(*({"name": n} for n in patch)),
        "Deployment",
    )
    assert [c["name"] for c in containers_of(containers)] == expected


OWNER_A = {"apiVersion": "v1", "kind": "X", "name": "a", "uid": "uid-a", "controller": True}
OWNER_B = {"apiVersion": "v1", "kind": "X", "name": "b", "uid": "uid-b"}


@pytest.mark.parametrize(
    ("kind", "target", "patch", "expected"),
    [
        pytest.param(
            "ConfigMap",
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"finalizers": ["b", "c"]}},
            {"metadata": {"finalizers": ["a", "b", "c"]}},
            id="finalizers-union",
        ),
        pytest.param(
            "Pod",
            {"metadata": {"finalizers": ["a", "b", "c"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}},
            {"metadata": {"finalizers": ["a", "c"]}},
            id="delete-from-primitive-list",
        ),
        pytest.param(
            "Pod",
            {"metadata": {}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
            {"metadata": {}},
            id="delete-from-an-absent-primitive-list",
        ),
        pytest.param(
            "Pod",
            {"metadata": {"finalizers": ["a", "x"]}},
            {
                "metadata": {
                    "$setElementOrder/finalizers": ["a"],
                    "$deleteFromPrimitiveList/finalizers": ["x"],
                }
            },
            {"metadata": {"finalizers": ["a"]}},
            id="kubectl-style-finalizer-removal",
        ),
        pytest.param(
            "Deployment",
            {"metadata": {"ownerReferences": [OWNER_A, OWNER_B]}},
            {"metadata": {"ownerReferences": [{"uid": "uid-a", "controller": False}]}},
            {"metadata": {"ownerReferences": [{**OWNER_A, "controller": False}, OWNER_B]}},
            id="owner-references-by-uid",
        ),
        pytest.param(
            "Deployment",
            {"metadata": {"ownerReferences": [OWNER_A, OWNER_B]}},
            {"metadata": {"ownerReferences": [{"uid": "uid-a", "$patch": "delete"}]}},
            {"metadata": {"ownerReferences": [OWNER_B]}},
            id="owner-reference-deleted-by-uid",
        ),
        pytest.param(
            "Deployment",
            deployment(APP, **{"labels": {"a": "1", "b": "2"}}),
            {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"replicas": 3}},
            {
                **deployment(APP, **{"labels": {"b": "2", "c": "3"}}),
                "spec": {**deployment(APP)["spec"], "replicas": 3},
            },
            id="maps-merge-and-null-deletes",
        ),
        pytest.param(
            "Deployment",
            {"spec": {"template": {"metadata": {"labels": {"a": "1", "b": "2"}}}}},
            {"spec": {"template": {"metadata": {"labels": {"$patch": "replace", "c": "3"}}}}},
            {"spec": {"template": {"metadata": {"labels": {"c": "3"}}}}},
            id="map-patch-replace",
        ),
        pytest.param(
            "Deployment",
            {"spec": {"selector": {"matchLabels": {"a": "1"}}, "replicas": 1}},
            {"spec": {"selector": {"$patch": "delete"}}},
            {"spec": {"replicas": 1}},
            id="map-patch-delete",
        ),
        pytest.param(
            "Deployment",
            {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
            {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
            {"spec": {"strategy": {"type": "Recreate"}}},
            id="retain-keys-clears-the-others",
        ),
        pytest.param(
            "Deployment",
            {
                "status": {
                    "conditions": [
                        {"type": "Available", "status": "False"},
                        {"type": "Progressing", "status": "True"},
                    ]
                }
            },
            {"status": {"conditions": [{"type": "Available", "status": "True"}]}},
            {
                "status": {
                    "conditions": [
                        {"type": "Available", "status": "True"},
                        {"type": "Progressing", "status": "True"},
                    ]
                }
            },
            id="deployment-status-conditions-by-type",
        ),
        pytest.param(
            "Service",
            {"spec": {"ports": [{"port": 80, "targetPort": 8000}, {"port": 443, "targetPort": 8443}]}},
            {"spec": {"ports": [{"port": 80, "targetPort": 9000}]}},
            {"spec": {"ports": [{"port": 80, "targetPort": 9000}, {"port": 443, "targetPort": 8443}]}},
            id="service-ports-by-port",
        ),
        pytest.param(
            "Pod",
            {"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}},
            {"spec": {"tolerations": [{"key": "c"}]}},
            {"spec": {"tolerations": [{"key": "c"}]}},
            id="tolerations-replaced",
        ),
        pytest.param(
            "Pod",
            {"spec": {"containers": [container("app", env=env(A="1"))]}},
            {"spec": {"containers": [{"name": "app", "env": env(B="2")}]}},
            {"spec": {"containers": [container("app", env=env(B="2", A="1"))]}},
            id="pod-spec-containers-and-env",
        ),
        pytest.param(
            "Pod",
            {
                "status": {
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "a"}, {"name": "b"}],
                }
            },
            {
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "b", "ready": True}],
                }
            },
            {
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "b", "ready": True}],
                }
            },
            id="pod-conditions-by-type-container-statuses-replaced",
        ),
        pytest.param(
            "Node",
            {
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "10.0.0.1"},
                        {"type": "Hostname", "address": "n"},
                    ]
                }
            },
            {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}},
            {
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "10.0.0.2"},
                        {"type": "Hostname", "address": "n"},
                    ]
                }
            },
            id="node-addresses-by-type",
        ),
        pytest.param(
            "Role",
            {"rules": [{"verbs": ["get"], "resources": ["pods"]}]},
            {"rules": [{"verbs": ["list"], "resources": ["pods"]}]},
            {"rules": [{"verbs": ["list"], "resources": ["pods"]}]},
            id="role-rules-replaced",
        ),
        pytest.param(
            "GPUService",
            {"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a", "x": 1}]}},
            {"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "a", "y": 2}]}},
            {"metadata": {"finalizers": ["b", "a"]}, "spec": {"containers": [{"name": "a", "y": 2}]}},
            id="unknown-kind-replaces-lists-but-merges-object-meta",
        ),
        pytest.param(
            "StatefulSet",
            deployment(APP, SIDECAR),
            {
                "spec": {
                    "template": {
                        "spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}
                    }
                }
            },
            {**deployment(SIDECAR, APP)},
            id="set-element-order-reorders",
        ),
        pytest.param(
            "Job",
            deployment(APP, SIDECAR),
            {
                "spec": {
                    "template": {
                        "spec": {
                            "$setElementOrder/containers": [
                                {"name": "sidecar"},
                                {"name": "new"},
                                {"name": "app"},
                            ],
                            "containers": [container("new")],
                        }
                    }
                }
            },
            {**deployment(SIDECAR, container("new"), APP)},
            id="set-element-order-places-a-new-item",
        ),
        pytest.param(
            "Pod",
            {"spec": {}},
            {
                "spec": {
                    "containers": [
                        {"name": "a", "$patch": "delete"},
                        container("b", env=[{"name": "C", "$patch": "delete"}]),
                    ]
                }
            },
            {"spec": {"containers": [container("b", env=[])]}},
            id="directives-in-a-new-list-applied-not-stored",
        ),
        pytest.param(
            "Pod",
            {"spec": {"a": 1}},
            {"spec": {"$unknown": 1, "b": {"c": None, "d": 2}}},
            {"spec": {"a": 1, "b": {"d": 2}}},
            id="new-map-drops-nulls-and-unknown-directives",
        ),
        pytest.param(
            "Pod",
            {"spec": {"nodeSelector": {"a": "1"}}},
            {"$patch": "replace", "spec": {"hostname": "h"}},
            {"spec": {"hostname": "h"}},
            id="root-patch-replace",
        ),
        pytest.param(
            "Pod",
            {"spec": {"containers": [{"image": "nameless"}, container("a")]}},
            {"spec": {"containers": [{"name": "a", "image": "a:2"}]}},
            {"spec": {"containers": [{"name": "a", "image": "a:2"}, {"image": "nameless"}]}},
            id="server-item-without-merge-key-kept",
        ),
        pytest.param(
            "Pod",
            {"spec": {"containers": "weird"}},
            {"spec": {"containers": [container("a")]}},
            {"spec": {"containers": [container("a")]}},
            id="type-mismatch-replaces",
        ),
    ],
)
def test_strategic_merge_patch(
    kind: str, target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert strategic_merge_patch(target, patch, kind) == expected


def _dollar_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$"):
                yield key
            yield from _dollar_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dollar_keys(item)


def test_strategic_merge_patch_never_stores_directives() -> None:
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "$setElementOrder/finalizers": ["b"],
            "finalizers": ["b"],
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "A", "$patch": "delete"}],
                            "resources": {"$patch": "replace"},
                        }
                    ],
                    "tolerations": [{"$patch": "replace"}, {"key": "k"}],
                    "volumes": [
                        {"$patch": "replace"},
                        {"name": "v", "emptyDir": {"$patch": "replace", "medium": ""}},
                    ],
                }
            },
        },
    }
    merged = strategic_merge_patch(deployment(APP, SIDECAR, finalizers=["a"]), patch, "Deployment")
    assert list(_dollar_keys(merged)) == []
    assert merged["metadata"]["finalizers"] == ["b"]
    assert merged["spec"]["template"]["spec"]["tolerations"] == [{"key": "k"}]
    assert merged["spec"]["template"]["spec"]["volumes"] == [{"name": "v", "emptyDir": {"medium": ""}}]
    assert [c["name"] for c in containers_of(merged)] == ["app", "sidecar"]


@pytest.mark.parametrize(
    ("patch", "in_message"),
    [
        pytest.param(
            pod_spec_patch({"image": "no-name"}), "merge key 'name'", id="element-without-merge-key"
        ),
        pytest.param(pod_spec_patch({"$patch": "delete"}), "merge key 'name'", id="delete-without-merge-key"),
        pytest.param(
            pod_spec_patch({"name": "app", "$patch": "frob"}), "'frob'", id="unknown-list-directive"
        ),
        pytest.param({"spec": {"$patch": "frob"}}, "'frob'", id="unknown-map-directive"),
        pytest.param(
            {"spec": {"strategy": {"$retainKeys": "type"}}}, "retainKeys", id="retain-keys-not-a-list"
        ),
        pytest.param(
            {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}},
            "retainKeys",
            id="retain-keys-missing-a-set-key",
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
            "primitive list",
            id="delete-list-not-a-list",
        ),
        pytest.param(
            {"metadata": {"$setElementOrder/finalizers": "a"}}, "setElementOrder", id="set-order-not-a-list"
        ),
        pytest.param({"metadata": {"finalizers": [["a"]]}}, "lists of lists", id="list-of-lists"),
        pytest.param(
            {"spec": {"template": {"metadata": {"finalizers": [{"a": 1}]}}}},
            "without a merge key",
            id="objects-in-a-primitive-list",
        ),
        pytest.param(
            {"spec": {"template": {"spec": {"containers": [{"name": "x"}, "scalar"]}}}},
            "not all of one type",
            id="mixed-list",
        ),
    ],
)
def test_malformed_strategic_merge_patch_is_400(patch: dict[str, Any], in_message: str) -> None:
    target = deployment(APP, SIDECAR, finalizers=["f"])
    with pytest.raises(ApiError) as raised:
        strategic_merge_patch(target, patch, "Deployment")
    assert (raised.value.code, raised.value.reason) == (400, "BadRequest")
    assert in_message in raised.value.message


def test_strategic_merge_patch_body_must_be_an_object() -> None:
    with pytest.raises(ApiError) as raised:
        strategic_merge_patch({}, [], "Pod")  # type: ignore[arg-type]
    assert raised.value.code == 400


# --- purity -------------------------------------------------------------------------------------

Apply = Callable[[Any, Any], Any]
PURITY_CASES: list[tuple[Apply, Any, Any]] = [
    (merge_patch, {"a": {"b": [1, {"c": 2}]}, "d": 1}, {"a": {"b": [3], "e": {"f": None}}, "d": None}),
    (
        json_patch,
        {"a": {"b": [1, {"c": 2}]}},
        [
            {"op": "add", "path": "/a/b/-", "value": {"x": [1]}},
            {"op": "copy", "from": "/a/b/1", "path": "/copied"},
            {"op": "remove", "path": "/a/b/0"},
        ],
    ),
    (
        lambda target, patch: strategic_merge_patch(target, patch, "Deployment"),
        deployment(APP, SIDECAR, finalizers=["a"], ownerReferences=[OWNER_A]),
        {
            "metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "uid-a", "name": "renamed"}]},
            **pod_spec_patch(
                {"name": "app", "env": env(Q="q")}, {"name": "sidecar", "$patch": "delete"}, container("new")
            ),
        },
    ),
]


@pytest.mark.parametrize(("apply", "target", "patch"), PURITY_CASES)
def test_inputs_are_not_mutated_and_results_share_nothing(apply: Apply, target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = apply(target, patch)
    assert (target, patch) == (target_before, patch_before)
    poisoned = _poison(result)
    assert poisoned > 0
    assert (target, patch) == (target_before, patch_before)
    assert apply(target, patch) == apply(target_before, patch_before)


def _poison(value: Any) -> int:
    """Change every dict and list inside ``value`` in place; how many were changed."""
    changed = 0
    if isinstance(value, dict):
        for item in list(value.values()):
            changed += _poison(item)
        value["poisoned"] = True
        changed += 1
    elif isinstance(value, list):
        for item in value:
            changed += _poison(item)
        value.append("poisoned")
        changed += 1
    return changed


# --- properties ---------------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
# No lists: where strategic and JSON merge patch are specified to agree on any kind.
LISTLESS = st.recursive(SCALARS, lambda inner: st.dictionaries(KEYS, inner, max_size=4), max_leaves=20)
LISTLESS_OBJECTS = st.dictionaries(KEYS, LISTLESS, max_size=4)


@given(JSON)
def test_empty_merge_patch_changes_nothing(value: Any) -> None:
    assert merge_patch(value, {}) == (value if isinstance(value, dict) else {})


@given(JSON, st.dictionaries(KEYS, JSON, max_size=4))
def test_merge_patch_is_idempotent(target: Any, patch: dict[str, Any]) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(LISTLESS_OBJECTS, LISTLESS_OBJECTS)
def test_strategic_on_an_unknown_kind_equals_merge_patch_without_lists(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert strategic_merge_patch(target, patch, "SomeCustomResource") == merge_patch(target, patch)


@given(JSON)
def test_json_patch_without_operations_is_identity(value: Any) -> None:
    assert json_patch(value, []) == value


@given(st.dictionaries(KEYS, JSON, max_size=4), st.text(max_size=4), JSON)
def test_json_patch_add_then_remove_round_trips(target: dict[str, Any], key: str, value: Any) -> None:
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    added = json_patch(target, [{"op": "add", "path": pointer, "value": value}])
    assert added[key] == value
    if key not in target:
        assert json_patch(added, [{"op": "remove", "path": pointer}]) == target
