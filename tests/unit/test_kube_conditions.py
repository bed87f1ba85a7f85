"""Conditions are upserted by type; the transition time moves only when the status changes; what a
status write is for leaves out what changes every tick."""

from __future__ import annotations

from gpuscale.kube.conditions import get, status_essence, upsert


def test_a_new_condition_is_added_last_with_the_time_and_generation() -> None:
    out = upsert([{"type": "Ready", "status": "True"}], "ScalingActive", True, "Running", "ok", 3, "T1")
    assert [c["type"] for c in out] == ["Ready", "ScalingActive"]
    assert out[1] == {
        "type": "ScalingActive",
        "status": "True",
        "reason": "Running",
        "message": "ok",
        "observedGeneration": 3,
        "lastTransitionTime": "T1",
    }


def test_same_status_keeps_the_transition_time_but_takes_the_new_reason() -> None:
    first = upsert([], "Ready", False, "Starting", "0/1 ready", 1, "T1")
    second = upsert(first, "Ready", False, "Unschedulable", "no GPU", 2, "T2")
    ready = get(second, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "T1"
    assert (ready["reason"], ready["message"], ready["observedGeneration"]) == ("Unschedulable", "no GPU", 2)


def test_a_changed_status_moves_the_transition_time_and_keeps_the_others() -> None:
    start = upsert(
        upsert([], "Ready", False, "Starting", "", 1, "T1"), "ScalingActive", True, "R", "", 1, "T1"
    )
    out = upsert(start, "Ready", True, "Ready", "1/1 ready", 1, "T2")
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in out] == [
        ("Ready", "True", "T2"),
        ("ScalingActive", "True", "T1"),
    ]
    assert start[0]["status"] == "False"  # the input is not changed
    assert get(out, "Missing") is None


def test_the_status_essence_leaves_out_samples_transition_times_and_condition_order() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "T1"}
    active = {"type": "ScalingActive", "status": "True", "reason": "Observing", "lastTransitionTime": "T1"}
    state = {"samples": [[1.0, 0.0]], "last_busy": None}
    first = status_essence({"replicas": 2, "autoscalerState": state, "conditions": [ready, active]})
    later = status_essence(
        {
            "replicas": 2,
            "autoscalerState": state | {"samples": [[1.0, 0.0], [2.0, 0.0]]},
            "conditions": [active | {"lastTransitionTime": "T2"}, ready],
        }
    )
    assert first == later
    moved = status_essence({"replicas": 3, "autoscalerState": state, "conditions": [ready, active]})
    assert moved != first
    busy = status_essence(
        {"replicas": 2, "autoscalerState": state | {"last_busy": 5.0}, "conditions": [ready, active]}
    )
    assert busy != first
    not_ready = status_essence(
        {"replicas": 2, "autoscalerState": state, "conditions": [ready | {"status": "False"}, active]}
    )
    assert not_ready != first
