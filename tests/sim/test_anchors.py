"""The anchors' algorithms, table-tested: the HPA's formula, tolerance, stabilisation and rate limits;
KEDA's activation and cooldown; the KPA's windows, panic entry and exit."""

from __future__ import annotations

import pytest
from gpuscale.sim.anchors import HPA, KEDA, KPA
from gpuscale.sim.policies import ClusterView


def view(t: float, queued: int = 0, running: int = 0, ready: int = 1, starting: int = 0) -> ClusterView:
    return ClusterView(t, queued, running, ready, starting, idle=0)


@pytest.mark.parametrize(
    ("metric", "replicas", "expected"),
    [
        (10.0, 10, 10),  # on target
        (10.5, 10, 10),  # 5 % over: within the 0.1 tolerance
        (10.9, 10, 10),  # 9 % over: within
        (11.0, 10, 11),  # "exactly" 10 % over: |1 - 1.1| is 0.10000000000000009 in float64, as in Go
        (11.5, 10, 12),  # ceil(11.5 / 1)
        (9.1, 10, 10),  # 9 % under: within
        (8.9, 10, 9),
        (0.0, 5, 0),  # the bounds come later
        (40.0, 4, 40),
    ],
)
def test_hpa_proposal_and_tolerance(metric: float, replicas: int, expected: int) -> None:
    assert HPA(1, 100).proposal(metric, replicas) == expected


def test_hpa_at_zero_replicas_scales_to_the_load_or_stays() -> None:
    # minReplicas 0: Go's per-pod ratio is +Inf with load and NaN without, where Python would raise.
    assert HPA(0, 10).proposal(3.0, 0) == 3
    assert HPA(0, 10).proposal(0.0, 0) == 0


def test_hpa_target_other_than_one() -> None:
    assert HPA(1, 100, target=5.0).proposal(22.0, 2) == 5  # ceil(22 / 5)


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        (3, 100, 7),  # max(+100 % = 6, +4 pods = 7)
        (10, 100, 20),  # max(20, 14)
        (10, 12, 12),  # within the limit
        (10, 40, 20),
        (30, 100, 50),  # maxReplicas 50
    ],
)
def test_hpa_default_scale_up_limit(current: int, desired: int, expected: int) -> None:
    assert HPA(1, 50).rate_limit(0.0, current, desired) == expected


def test_hpa_scale_up_limit_counts_changes_within_the_period() -> None:
    hpa = HPA(1, 100)
    assert hpa.reconcile(0.0, 3, 100.0) == 7
    # 10 s later the 15 s period still holds the +4: it started at 3, so 7 is the limit.
    assert hpa.reconcile(10.0, 7, 100.0) == 7
    # At 15 s the event is out of the period (strictly after now - 15 s counts): from 7, up to 14.
    assert hpa.reconcile(15.0, 7, 100.0) == 14


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    hpa = HPA(1, 100)
    assert hpa.reconcile(0.0, 10, 10.0) == 10
    for t in range(15, 300, 15):
        # The highest recommendation of the last 300 s (10, at 0 s) holds the count.
        assert hpa.reconcile(float(t), 10, 2.0) == 10, t
    # At 300 s the 10 sits on the cutoff, and only recommendations strictly after it count; 100 % per
    # 15 s allows the whole step down.
    assert hpa.reconcile(300.0, 10, 2.0) == 2


def test_hpa_scale_down_takes_the_highest_recent_recommendation() -> None:
    hpa = HPA(1, 100)
    hpa.reconcile(0.0, 10, 10.0)
    hpa.reconcile(100.0, 10, 6.0)
    hpa.reconcile(200.0, 10, 4.0)
    assert hpa.reconcile(305.0, 10, 2.0) == 6  # 10 left the window; 6 (100 s) is the highest left


@pytest.mark.parametrize(
    ("current", "metric", "expected"),
    [(0, 50.0, 0), (12, 1.0, 8), (1, 0.0, 2)],
    ids=["scaled to zero from outside: left alone", "above max: to max", "below min: to min"],
)
def test_hpa_bounds(current: int, metric: float, expected: int) -> None:
    assert HPA(2, 8).reconcile(0.0, current, metric) == expected


def test_keda_activates_from_zero_on_its_poll() -> None:
    keda = KEDA(0, 10)
    assert keda.desired(view(0.0, ready=0)) == 0  # nothing waiting: stays at zero
    assert keda.desired(view(15.0, queued=3, ready=0)) == 0  # the HPA does not act at zero; no poll yet
    assert keda.desired(view(30.0, queued=3, ready=0)) == 1  # the 30 s poll activates: 0 -> 1


def test_keda_scales_to_zero_after_the_cooldown() -> None:
    keda = KEDA(0, 10)
    assert keda.desired(view(0.0, running=1, ready=1)) == 1  # active
    for t in range(30, 300, 30):
        assert keda.desired(view(float(t), ready=1)) == 1, t  # inactive, cooling down
    assert keda.desired(view(300.0, ready=1)) == 0  # 300 s since the last active poll


def test_keda_with_min_one_never_goes_to_zero() -> None:
    keda = KEDA(1, 10)
    for t in range(0, 900, 15):
        assert keda.desired(view(float(t), ready=1)) == 1


def test_keda_cached_metrics_show_the_hpa_the_last_poll() -> None:
    live = KEDA(1, 100)
    cached = KEDA(1, 100, use_cached_metrics=True)
    for keda in (live, cached):
        keda.desired(view(0.0, ready=4, running=4))  # poll and sync at 0 s: 4 outstanding on 4
    # At 15 s the HPA syncs; the next poll is at 30 s. Live it sees 20 outstanding, cached still 4.
    burst = view(15.0, queued=16, running=4, ready=4)
    assert live.desired(burst) == 8  # +100 % (max(8, 4 + 4))
    assert cached.desired(burst) == 4


def test_kpa_stable_count_with_target_utilisation() -> None:
    kpa = KPA(1, 100)
    # 2.8 requests on average over both windows, 0.7 per pod: 4 pods; not panic (4 / 4 ready < 2).
    assert kpa.scale(0.0, 4, stable=2.8, panic=2.8) == 4
    assert kpa.panic_time is None


def test_kpa_panics_holds_and_unpanics() -> None:
    kpa = KPA(1, 100)
    # Panic window 7: ceil(7 / 0.7) = 10 pods, 10 / 1 ready >= 200 %: panic, scale to 10.
    assert kpa.scale(0.0, 1, stable=1.0, panic=7.0) == 10
    assert kpa.panic_time == 0.0
    # Still in panic (last over-threshold tick 0 s ago + 60 s window): never lower than the max seen.
    assert kpa.scale(30.0, 10, stable=2.0, panic=2.0) == 10
    assert kpa.scale(60.0, 10, stable=2.0, panic=2.0) == 10  # exactly the window: not past it yet
    # Past 60 s since the last over-threshold tick: stable mode, and at most halving from 10 ready.
    assert kpa.scale(62.0, 10, stable=1.4, panic=1.4) == 5
    assert kpa.panic_time is None


def test_kpa_panic_is_extended_by_each_tick_over_the_threshold() -> None:
    kpa = KPA(1, 100)
    kpa.scale(0.0, 1, stable=1.0, panic=7.0)
    kpa.scale(50.0, 2, stable=2.0, panic=3.0)  # ceil(3 / 0.7) = 5, 5 / 2 ready >= 2: extended to 50 s
    assert kpa.panic_time == 50.0
    assert kpa.scale(100.0, 10, stable=0.7, panic=0.7) == 10  # 50 s after: still panicking


def test_kpa_scales_up_in_panic_beyond_the_first_count() -> None:
    kpa = KPA(1, 100)
    assert kpa.scale(0.0, 1, stable=1.0, panic=7.0) == 10
    assert kpa.scale(2.0, 1, stable=2.0, panic=14.0) == 20


def test_kpa_starts_in_panic_holding_more_than_one_ready_pod() -> None:
    kpa = KPA(1, 100, initial_ready=6)
    assert kpa.scale(30.0, 6, stable=0.0, panic=0.0) == 6  # newAutoscaler: panic from creation
    assert kpa.scale(62.0, 6, stable=0.0, panic=0.0) == 3  # out of panic after 60 s: halving


def test_kpa_windows_average_one_second_buckets() -> None:
    kpa = KPA(1, 100)
    buckets = [0.0] * 54 + [7.0] * 6  # a burst in the last 6 s
    assert kpa.window_average(buckets, 60) == pytest.approx(0.7)
    assert kpa.window_average(buckets, 6) == pytest.approx(7.0)
    assert kpa.window_average([2.0, 4.0], 60) == pytest.approx(3.0)  # a partial window
    state = ClusterView(60.0, 0, 1, 1, 0, 0, concurrency=buckets)
    assert kpa.desired(state) == 10  # panic on the 6 s window


def test_kpa_min_and_max_scale() -> None:
    kpa = KPA(2, 5)
    state = ClusterView(10.0, 0, 0, 3, 0, 3, concurrency=[0.0] * 10)
    assert kpa.desired(state) == 2
    busy = ClusterView(10.0, 0, 0, 3, 0, 0, concurrency=[70.0] * 10)
    assert kpa.desired(busy) == 5
