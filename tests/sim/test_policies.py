"""Ours in the simulator is the real policy module, fed the Observation the control loop builds."""

from __future__ import annotations

import gpuscale.control.policy as real_policy
import gpuscale.sim.policies as sim_policies
import pytest
from gpuscale.control.policy import Observation, PolicyState, decide
from gpuscale.sim.policies import ClusterView, Gpuscale
from gpuscale.spec import AutoscalingSpec


def test_the_simulator_calls_the_real_decide() -> None:
    # No copy of the policy: the simulator's module holds the control package's own function.
    assert vars(sim_policies)["decide"] is real_policy.decide
    assert vars(sim_policies)["Observation"] is real_policy.Observation


def test_the_observation_is_the_loops() -> None:
    view = ClusterView(12.5, queued=3, running=4, ready=4, starting=2, idle=0, concurrency=[1.0])
    assert Gpuscale.observation(view) == Observation(12.5, 3, 4, 4, 2, 0)


def test_defaults_come_from_the_spec() -> None:
    ours = Gpuscale()
    assert ours.spec == AutoscalingSpec()
    assert ours.interval == AutoscalingSpec().tick_seconds == 1.0
    assert ours.removal == "idle-only"


def test_decisions_and_state_match_calling_decide_directly() -> None:
    spec = AutoscalingSpec(min_replicas=1, max_replicas=8)
    ours = Gpuscale(spec)
    state = PolicyState()
    views = [
        ClusterView(0.0, 0, 1, 2, 0, 1),
        ClusterView(1.0, 5, 2, 2, 0, 0),  # a burst: 7 outstanding, nothing idle
        ClusterView(2.0, 4, 2, 2, 5, 0),  # capacity on the way counts
        ClusterView(3.0, 0, 1, 7, 0, 6),
    ]
    for view in views:
        want = decide(
            spec,
            Observation(view.time, view.queued, view.running, view.ready, view.starting, view.idle),
            state,
        )
        state = want.state
        assert ours.desired(view) == want.desired
        assert ours.state == want.state
        assert ours.last is not None
        assert ours.last.reason == want.reason
    assert [v.time for v in views] == [s[0] for s in ours.state.samples]


@pytest.mark.parametrize(
    ("view", "desired"),
    [
        (ClusterView(0.0, 7, 1, 1, 0, 0), 8),  # the burst rule: 8 outstanding, one replica each
        (ClusterView(0.0, 30, 1, 1, 0, 0), 8),  # bounded by maxReplicas
        (ClusterView(0.0, 7, 1, 1, 7, 0), 8),  # starting replicas are capacity: hold at 8
    ],
)
def test_ours_through_the_real_module(view: ClusterView, desired: int) -> None:
    assert Gpuscale(AutoscalingSpec(max_replicas=8)).desired(view) == desired
