"""The scaling policy: one table row per rule, a few runs over time, and property tests of its invariants."""
# ruff: noqa: E501  (the table reads best one row per line)

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from gpuscale.control.policy import Decision, Observation, PolicyState, decide
from gpuscale.spec import AutoscalingSpec
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = 1000.0
DEFAULT = AutoscalingSpec()


def spec(**overrides: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(overrides)


def obs(
    queued: float | None, running: float | None, ready: int, starting: int = 0, idle: int = 0
) -> Observation:
    return Observation(NOW, queued, running, ready, starting, idle)


def history(value: float, seconds: float, *, step: float = 1.0) -> tuple[tuple[float, float], ...]:
    """`value` outstanding at every tick of the last `seconds` before NOW."""
    count = int(seconds / step)
    return tuple((NOW - step * i, value) for i in range(count, 0, -1))


QUIET = PolicyState(samples=history(0, 60), below_since=NOW - 30, last_busy=NOW - 400)
# Random arrivals: 4 outstanding most of the minute, 8 one tick in six (mean 4.67, 90th percentile 8).
VARIED = tuple((t, 8.0 if i % 6 == 0 else 4.0) for i, (t, _) in enumerate(history(0, 60)))
# One client sending one request after another: 1 outstanding, 0 for a moment between requests.
CLOSED_LOOP = tuple((t, 0.0 if i % 10 == 0 else 1.0) for i, (t, _) in enumerate(history(0, 60)))

TABLE: list[tuple[str, AutoscalingSpec, Observation, PolicyState, int, str, str]] = [
    # id, spec, observation, state, desired, kind, words in the reason
    ("burst: 7 wait behind 1 busy replica", DEFAULT, obs(7, 1, 1), PolicyState(), 8, "up", "7 waiting"),
    ("burst from zero", spec(minReplicas=0), obs(3, 0, 0), PolicyState(), 3, "up", "0 → 3"),
    ("one request is one replica (target 1.0)", DEFAULT, obs(1, 0, 0), PolicyState(), 1, "up", "0 → 1"),
    ("target 2 per replica", spec(targetPerReplica=2), obs(4, 1, 1), PolicyState(), 3, "up", "1 → 3"),
    ("starting replicas are capacity on the way", DEFAULT, obs(7, 1, 1, 7), PolicyState(), 8, "hold", "steady"),
    ("bounded by maxReplicas", DEFAULT, obs(30, 1, 1), PolicyState(), 8, "up", "maxReplicas 8"),
    ("waiting with an idle replica: no burst", DEFAULT, obs(1, 1, 2, 0, 1), PolicyState(), 2, "hold", "steady"),
    ("fewer waiting than ready replicas: no burst", DEFAULT, obs(3, 6, 6), PolicyState(samples=history(4, 60)), 6, "wait", "wants 5"),
    ("as many waiting as ready replicas: burst", spec(maxReplicas=20), obs(6, 6, 6), PolicyState(samples=history(4, 60)), 12, "up", "6 waiting"),
    ("no data: hold", DEFAULT, obs(None, None, 5), QUIET, 5, "no-data", "holding at 5"),
    ("no data: a lowered max still applies", spec(maxReplicas=3), obs(None, 1, 5), QUIET, 3, "no-data", "3"),
    ("no data: minReplicas still applies", spec(minReplicas=2), obs(None, None, 0), QUIET, 2, "no-data", "2"),
    ("average of 3 holds 3", DEFAULT, obs(0, 3, 3), PolicyState(samples=history(3, 60)), 3, "hold", "steady"),
    ("averaged rise, no queue", DEFAULT, obs(0, 2, 2), PolicyState(samples=history(4, 6)), 4, "up", "over 6 s"),
    ("load falls: wait the delay", DEFAULT, obs(0, 0, 4), PolicyState(samples=history(0, 60)), 4, "wait", "30 s more"),
    ("after the delay: at most halve", DEFAULT, obs(0, 0, 8), QUIET, 4, "down", "÷2"),
    ("after the delay: to what the load wants", DEFAULT, obs(0, 2, 3), replace(QUIET, samples=history(2, 60)),
     2, "down", "3 → 2"),
    ("no scale-down within the delay after a scale-up", DEFAULT, obs(0, 0, 4), replace(QUIET, last_scale_up=NOW - 10),
     4, "wait", "20 s more"),
    ("minReplicas holds", spec(minReplicas=2), obs(0, 0, 2), QUIET, 2, "hold", "steady"),
    ("varied load keeps room: its 90th percentile, not its mean", DEFAULT, obs(0, 4, 8), replace(QUIET, samples=VARIED),
     8, "hold", "8.00 over 60 s"),
    ("a steady client is one replica: no room added", DEFAULT, obs(0, 1, 2), replace(QUIET, samples=CLOSED_LOOP),
     1, "down", "2 → 1"),
    ("above a lowered max: down at once", spec(maxReplicas=2), obs(0, 1, 5), PolicyState(), 2, "down", "above maxReplicas"),
    ("to zero waits for the idle period", spec(minReplicas=0), obs(0, 0, 1), replace(QUIET, last_busy=NOW - 100),
     1, "wait", "200 s more"),
    ("to zero after the idle period", spec(minReplicas=0), obs(0, 0, 1), replace(QUIET, last_busy=NOW - 300),
     0, "down", "1 → 0"),
    ("two idle replicas, zero not yet", spec(minReplicas=0), obs(0, 0, 2), replace(QUIET, last_busy=NOW - 100),
     1, "down", "2 → 1"),
    ("never busy: zero at once after the delay", spec(minReplicas=0), obs(0, 0, 1), replace(QUIET, last_busy=None),
     0, "down", "1 → 0"),
    ("scale to zero after 0 s", spec(minReplicas=0, scaleToZeroAfterSeconds=0), obs(0, 0, 1), replace(QUIET, last_busy=NOW),
     0, "down", "1 → 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spec_", "observation", "state", "desired", "kind", "words"), TABLE, ids=[r[0] for r in TABLE]
)
def test_rule(
    name: str,
    spec_: AutoscalingSpec,
    observation: Observation,
    state: PolicyState,
    desired: int,
    kind: str,
    words: str,
) -> None:
    decision = decide(spec_, observation, state)
    assert (decision.desired, decision.kind) == (desired, kind), decision.reason
    assert words in decision.reason


def test_fixed_count_when_autoscaling_is_off() -> None:
    decision = decide(spec(enabled=False), obs(50, 1, 1), PolicyState(), fixed=3)
    assert (decision.desired, decision.kind, decision.reason) == (
        3,
        "fixed",
        "autoscaling off: 3 replicas as set",
    )


def test_the_delay_restarts_when_the_load_comes_back() -> None:
    waiting = decide(DEFAULT, obs(0, 0, 4), PolicyState(samples=history(0, 60)))
    assert waiting.state.below_since == NOW
    busy_again = replace(waiting.state, samples=history(4, 60))
    back = decide(DEFAULT, Observation(NOW + 1, 0, 4, 4), busy_again)
    assert back.kind == "hold"
    assert back.state.below_since is None


def test_state_survives_json() -> None:
    decision = decide(DEFAULT, obs(3, 1, 1), PolicyState(samples=history(2, 10), last_busy=NOW - 1))
    restored = PolicyState.from_dict(json.loads(json.dumps(decision.state.to_dict())))
    assert restored == decision.state


def run(spec_: AutoscalingSpec, loads: Sequence[float], start_ready: int = 1) -> list[Decision]:
    """Ticks of 1 s where `loads[i]` requests are outstanding and replicas follow the decision at once."""
    state, ready, decisions = PolicyState(), start_ready, []
    for i, load in enumerate(loads):
        running = min(load, ready)
        observation = Observation(float(i), load - running, running, ready, 0, max(0, ready - int(running)))
        decision = decide(spec_, observation, state)
        decisions.append(decision)
        state, ready = decision.state, decision.desired
    return decisions


def test_a_step_is_met_on_the_first_tick_and_released_after_the_windows() -> None:
    decisions = run(DEFAULT, [0] * 5 + [8] * 20 + [0] * 120)
    desired = [d.desired for d in decisions]
    assert desired[5] == 8  # the first tick that sees the step
    assert desired[:5] == [1] * 5
    first_down = next(i for i, d in enumerate(decisions) if d.kind == "down")
    # The 60 s average must fall below 8, then the lower count wait 30 s more.
    assert first_down >= 25 + 30
    assert desired[-1] == 1
    assert all(after >= (before + 1) // 2 for before, after in itertools.pairwise(desired))


def test_noise_around_the_count_does_not_flap() -> None:
    decisions = run(DEFAULT, [3, 2, 3, 4, 3, 2, 3, 3, 4, 2] * 12, start_ready=3)
    changes = sum(1 for a, b in itertools.pairwise(decisions) if a.desired != b.desired)
    assert changes <= 2, [d.desired for d in decisions]


# Properties over arbitrary specs, states and observations.

times = st.floats(min_value=NOW - 500, max_value=NOW - 0.001)


@st.composite
def specs(draw: st.DrawFn) -> AutoscalingSpec:
    low = draw(st.integers(0, 10))
    stable = draw(st.floats(1, 300))
    return spec(
        minReplicas=low,
        maxReplicas=draw(st.integers(max(low, 1), 20)),
        targetPerReplica=draw(st.sampled_from([0.5, 1.0, 1.5, 4.0])),
        stableWindowSeconds=stable,
        burstWindowSeconds=draw(st.floats(0.5, 1)) * stable,
        scaleDownDelaySeconds=draw(st.floats(0, 120)),
        maxScaleDownRate=draw(st.floats(1, 10)),
        scaleToZeroAfterSeconds=draw(st.floats(0, 600)),
    )


states = st.builds(
    PolicyState,
    samples=st.lists(st.tuples(times, st.floats(0, 50)), max_size=30).map(lambda s: tuple(sorted(s))),
    last_scale_up=st.none() | times,
    below_since=st.none() | times,
    last_busy=st.none() | times,
)
loads = st.floats(min_value=0, max_value=60)
replica_counts = st.integers(0, 25)


@settings(max_examples=300, deadline=None)
@given(specs(), states, loads, loads, replica_counts, replica_counts)
def test_bounds_always_hold(
    spec_: AutoscalingSpec, state: PolicyState, queued: float, running: float, ready: int, starting: int
) -> None:
    decision = decide(spec_, obs(queued, running, ready, starting), state)
    assert spec_.min_replicas <= decision.desired <= spec_.max_replicas


@settings(max_examples=300, deadline=None)
@given(specs(), states, st.none() | loads, replica_counts, replica_counts)
def test_missing_data_never_scales_down(
    spec_: AutoscalingSpec, state: PolicyState, running: float | None, ready: int, starting: int
) -> None:
    current = ready + starting
    decision = decide(spec_, obs(None, running, ready, starting), state)
    assert decision.desired >= min(current, spec_.max_replicas)
    assert decision.kind == "no-data"


@settings(max_examples=300, deadline=None)
@given(specs(), states, loads, loads, loads, loads, replica_counts, replica_counts)
def test_monotone_in_load(
    spec_: AutoscalingSpec,
    state: PolicyState,
    queued: float,
    running: float,
    more_queued: float,
    more_running: float,
    ready: int,
    starting: int,
) -> None:
    low = decide(spec_, obs(queued, running, ready, starting), state)
    high = decide(spec_, obs(queued + more_queued, running + more_running, ready, starting), state)
    assert high.desired >= low.desired


@settings(max_examples=300, deadline=None)
@given(specs(), states, loads, loads, replica_counts)
def test_a_first_lower_wish_never_removes_a_replica(
    spec_: AutoscalingSpec, state: PolicyState, queued: float, running: float, ready: int
) -> None:
    decision = decide(spec_, obs(queued, running, ready), replace(state, below_since=None))
    if spec_.scale_down_delay_seconds > 0:
        assert decision.desired >= min(ready, spec_.max_replicas)
