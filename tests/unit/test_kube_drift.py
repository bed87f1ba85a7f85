"""Drift: only what the operator sets is compared, so the server's defaults never cause a write."""

from __future__ import annotations

from typing import Any

import pytest
from gpuscale.kube.drift import covers, drift_patch

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m", "labels": {"a": "1"}, "ownerReferences": [{"uid": "u", "name": "s"}]},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {"containers": [{"name": "c", "image": "i:1", "env": [{"name": "X", "value": "1"}]}]}
        },
    },
}


def live(**spec: Any) -> dict[str, Any]:
    """DESIRED as the server returns it: defaults added, status and server metadata beside."""
    container = {
        "name": "c",
        "image": "i:1",
        "env": [{"name": "X", "value": "1"}],
        "imagePullPolicy": "IfNotPresent",
    }
    body: dict[str, Any] = {
        "metadata": {
            "name": "m",
            "uid": "x",
            "resourceVersion": "9",
            "labels": {"a": "1", "extra": "kept"},
            "ownerReferences": [{"uid": "u", "name": "s", "controller": True}],
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [container], "dnsPolicy": "ClusterFirst"}},
        },
        "status": {"readyReplicas": 1},
    }
    body["spec"].update(spec)
    return body


def test_server_defaults_are_no_drift() -> None:
    assert drift_patch(live(), DESIRED) == {}


def test_a_changed_field_sends_its_whole_section() -> None:
    changed = live()
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "2"}]
    patch = drift_patch(changed, DESIRED)
    assert patch == {"spec": DESIRED["spec"]}


def test_ignored_paths_are_left_to_others() -> None:
    scaled = live(replicas=5)
    assert drift_patch(scaled, DESIRED, ignore=("spec.replicas",)) == {}
    patch = drift_patch(scaled, DESIRED)
    assert patch["spec"]["replicas"] == 1


def test_missing_labels_are_patched_and_foreign_ones_kept() -> None:
    relabelled = live()
    relabelled["metadata"]["labels"] = {"extra": "kept"}
    assert drift_patch(relabelled, DESIRED) == {"metadata": {"labels": {"a": "1"}}}


@pytest.mark.parametrize(
    ("live_value", "desired", "expected"),
    [
        (1, 1.0, True),  # a float the server wrote back as an int
        (True, 1, False),  # but a bool is no number
        ("1", 1, False),
        ([1, 2], [1], False),  # lists match item by item and in length
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        (None, {"a": 1}, False),
    ],
)
def test_covers(live_value: Any, desired: Any, expected: bool) -> None:
    assert covers(live_value, desired) is expected
