"""The simpy model: FIFO service, start-up delay, what a replica costs, how each kind of autoscaler removes
replicas, bounded queues, random routing, the warm-up, and one seed giving one result."""

from __future__ import annotations

import numpy as np
import pytest
from gpuscale.sim.anchors import HPA, KPA
from gpuscale.sim.model import RunResult, SimConfig, simulate
from gpuscale.sim.policies import Autoscaler, ClusterView, Fixed, Gpuscale, Removal
from gpuscale.sim.traces import Jobs, Spike, Steady, Trace, make_trace
from gpuscale.spec import AutoscalingSpec


def trace(arrivals: list[float], jobs: list[float], duration: float) -> Trace:
    return Trace("hand", "by hand", duration, np.array(arrivals), np.array(jobs))


class Scripted:
    """Wants `counts[i]` from `times[i]` on; removes replicas the way it is told to."""

    interval = 1.0

    def __init__(self, plan: list[tuple[float, int]], removal: Removal, name: str = "scripted") -> None:
        self.plan = plan
        self.removal = removal
        self.name = name

    def desired(self, view: ClusterView) -> int:
        wanted = view.replicas
        for at, count in self.plan:
            if view.time >= at:
                wanted = count
        return wanted


def run(t: Trace, policy: Autoscaler, initial: int, **config: object) -> RunResult:
    settings = {"phase": 0.0, **config}
    return simulate(t, lambda _lo, _hi, _n: policy, SimConfig(**settings), 0, 100, initial=initial)  # type: ignore[arg-type]


def test_one_queue_serves_in_arrival_order() -> None:
    result = run(trace([0.0, 0.1, 0.2], [1.0, 1.0, 1.0], 10.0), Fixed(1), initial=1)
    assert (result.finish - result.trace.arrivals).tolist() == pytest.approx([1.0, 1.9, 2.8])
    assert (result.start - result.trace.arrivals).tolist() == pytest.approx([0.0, 0.9, 1.8])


def test_a_request_waits_for_a_replica_to_start() -> None:
    policy = Scripted([(0.0, 1)], "idle-only")
    result = run(trace([0.5], [1.0], 100.0), policy, initial=0, startup=(30.0, 30.0))
    assert result.start.tolist() == pytest.approx([30.0])  # started at 0 s, ready at 30 s
    assert result.finish.tolist() == pytest.approx([31.0])
    assert result.replica_seconds == pytest.approx(100.0)  # held from 0 s, start-up included


def test_a_replica_removed_while_starting_costs_its_start_up_so_far() -> None:
    policy = Scripted([(0.0, 2), (20.0, 1)], "idle-only")
    result = run(trace([], [], 100.0), policy, initial=1, startup=(50.0, 50.0))
    assert result.replica_seconds == pytest.approx(100.0 + 20.0)
    assert result.replicas_started == 1
    assert [(e.before, e.after) for e in result.events] == [(1, 2), (2, 1)]


# Request A (1 s) goes to replica 1 at 0 s; B (100 s) to replica 2 at 0.5 s; at 5 s one replica must go.
BUSY_NEWEST = trace([0.0, 0.5], [1.0, 100.0], 200.0)


def test_idle_only_removal_stops_the_idle_replica() -> None:
    result = run(BUSY_NEWEST, Scripted([(5.0, 1)], "idle-only"), initial=2)
    assert result.busy_removed == 0
    assert result.replica_seconds == pytest.approx(5.0 + 200.0)  # replica 1 gone at 5 s; 2 stays
    assert (result.finish - result.trace.arrivals).tolist() == pytest.approx([1.0, 100.0])


def test_replicaset_removal_terminates_the_newest_even_when_busy_and_it_drains() -> None:
    result = run(BUSY_NEWEST, Scripted([(5.0, 1)], "replicaset"), initial=2)
    assert result.busy_removed == 1
    # Replica 2 got SIGTERM at 5 s, finished B (at 100.5 s) and only then gave its GPU back.
    assert result.replica_seconds == pytest.approx(100.5 + 200.0)
    assert (result.finish - result.trace.arrivals).tolist() == pytest.approx([1.0, 100.0])  # nothing lost


def test_replicaset_removes_starting_pods_first() -> None:
    policy = Scripted([(0.0, 3), (10.0, 2)], "replicaset")
    result = run(trace([], [], 100.0), policy, initial=2, startup=(60.0, 60.0))
    assert result.busy_removed == 0
    assert result.replica_seconds == pytest.approx(2 * 100.0 + 10.0)


def test_a_bounded_queue_rejects_what_does_not_fit() -> None:
    result = run(trace([0.0] * 5, [10.0] * 5, 100.0), Fixed(1), initial=1, max_queue=2)
    assert result.rejected == 2
    assert int(np.isnan(result.finish).sum()) == 2


STEADY = make_trace("steady", Steady(4.0), 3600.0, Jobs("exponential", 1.0), seed=3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Gpuscale(AutoscalingSpec(min_replicas=1, max_replicas=32)),
        lambda: HPA(1, 32),
        lambda: KPA(1, 32, initial_ready=5),
        lambda: Fixed(6),
    ],
    ids=["gpuscale", "hpa", "kpa", "fixed"],
)
def test_replica_seconds_never_beat_the_work(make: object) -> None:
    policy = make()  # type: ignore[operator]
    result = simulate(STEADY, lambda _lo, _hi, _n: policy, SimConfig(seed=3), 1, 32)
    # The lower bound is the GPU-seconds of the jobs, the arrival rate times the mean job length.
    assert result.work == pytest.approx(4.0 * 1.0 * 3600.0, rel=0.05)
    assert result.replica_seconds >= result.work
    assert int(np.isnan(result.finish).sum()) == 0  # every request answered


def test_fixed_replicas_cost_exactly_their_count_times_the_run() -> None:
    result = simulate(STEADY, lambda _lo, _hi, _n: Fixed(6), SimConfig(seed=3), 1, 32, initial=6)
    assert result.replica_seconds == pytest.approx(6 * result.end)


def test_the_warm_up_is_left_out_of_the_figures() -> None:
    result = simulate(
        STEADY, lambda _lo, _hi, _n: Fixed(6), SimConfig(seed=3, warmup=600.0), 1, 32, initial=6
    )
    assert result.replica_seconds == pytest.approx(6 * (result.end - 600.0))
    assert result.work == pytest.approx(float(STEADY.jobs[STEADY.arrivals >= 600.0].sum()))


def test_random_per_pod_queues_wait_longer_than_one_queue() -> None:
    single = simulate(STEADY, lambda _lo, _hi, _n: Fixed(5), SimConfig(seed=3), 1, 32, initial=5)
    spread = simulate(
        STEADY, lambda _lo, _hi, _n: Fixed(5), SimConfig(seed=3, routing="random"), 1, 32, initial=5
    )
    wait_single = float(np.mean(single.start - STEADY.arrivals))
    wait_random = float(np.mean(spread.start - STEADY.arrivals))
    # 80 % busy: M/M/5 waits about 0.6 s on average, five M/M/1 queues about 4 s.
    assert wait_random > 3 * wait_single


def test_one_seed_gives_one_result() -> None:
    spike = make_trace("spike", Spike(2.0, 12.0, 300.0, 60.0), 900.0, Jobs(), seed=5)

    def once() -> RunResult:
        return simulate(spike, lambda lo, hi, n: KPA(lo, hi, initial_ready=n), SimConfig(seed=5), 1, 16)

    a, b = once(), once()
    assert np.array_equal(a.finish, b.finish)
    assert a.replica_seconds == b.replica_seconds
    assert [(e.time, e.after) for e in a.events] == [(e.time, e.after) for e in b.events]


def test_ours_never_removes_a_busy_replica_on_a_spike() -> None:
    spike = make_trace("spike", Spike(2.0, 12.0, 300.0, 60.0), 900.0, Jobs(), seed=5)
    ours = simulate(
        spike,
        lambda lo, hi, _n: Gpuscale(AutoscalingSpec(min_replicas=lo, max_replicas=hi)),
        SimConfig(seed=5),
        1,
        16,
    )
    hpa = simulate(spike, lambda lo, hi, _n: HPA(lo, hi), SimConfig(seed=5), 1, 16)
    assert ours.scale_downs > 0
    assert ours.busy_removed == 0
    assert hpa.scale_downs > 0
