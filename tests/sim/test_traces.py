"""Traces: one seed, one trace; the shapes' rates; job lengths with the mean asked for; CSV replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpuscale.sim.traces import (
    Diurnal,
    Jobs,
    Spike,
    Steady,
    Step,
    make_trace,
    read_replay,
    write_replay,
)

JOBS = Jobs("lognormal", 1.0, 0.5)


def test_one_seed_gives_one_trace() -> None:
    a = make_trace("t", Step(2, 10, 100, 50), 600, JOBS, seed=7)
    b = make_trace("t", Step(2, 10, 100, 50), 600, JOBS, seed=7)
    c = make_trace("t", Step(2, 10, 100, 50), 600, JOBS, seed=8)
    assert np.array_equal(a.arrivals, b.arrivals)
    assert np.array_equal(a.jobs, b.jobs)
    assert not np.array_equal(a.arrivals[:50], c.arrivals[:50])


def test_the_job_distribution_leaves_arrival_times_alone() -> None:
    fixed = make_trace("t", Steady(5), 300, Jobs("fixed", 2.0), seed=3)
    exponential = make_trace("t", Steady(5), 300, Jobs("exponential", 2.0), seed=3)
    assert np.array_equal(fixed.arrivals, exponential.arrivals)
    assert set(fixed.jobs.tolist()) == {2.0}


def test_arrivals_are_sorted_within_the_trace() -> None:
    trace = make_trace("t", Diurnal(1, 5, period=600, peak_at=300), 600, JOBS, seed=1)
    assert np.all(np.diff(trace.arrivals) >= 0)
    assert trace.arrivals[0] >= 0
    assert trace.arrivals[-1] < 600


@pytest.mark.parametrize(
    ("shape", "times", "rates"),
    [
        (Steady(3), [0, 50, 99], [3, 3, 3]),
        (Step(2, 10, 100, 50), [0, 99.9, 100, 149.9, 150, 500], [2, 2, 10, 10, 2, 2]),
        (Step(2, 10, 100), [99, 100, 10_000], [2, 10, 10]),
        (Spike(1, 20, 60, 30), [59, 60, 89, 90], [1, 20, 20, 1]),
        (Diurnal(1, 9, period=100, peak_at=25), [25, 75, 0, 50], [9, 1, 5, 5]),
    ],
    ids=["steady", "step up and down", "step for ever", "spike", "diurnal"],
)
def test_shape_rates(shape: Steady | Step | Diurnal, times: list[float], rates: list[float]) -> None:
    assert shape.rates(np.array(times, dtype=float)) == pytest.approx(rates)


def test_poisson_counts_follow_the_rate() -> None:
    trace = make_trace("t", Step(2, 10, 1000, 1000), 3000, JOBS, seed=11)
    low = np.count_nonzero(trace.arrivals < 1000)
    high = np.count_nonzero((trace.arrivals >= 1000) & (trace.arrivals < 2000))
    # Poisson: the standard deviation is the square root of the mean; 5 of them is a wide margin.
    assert abs(low - 2000) < 5 * 2000**0.5
    assert abs(high - 10000) < 5 * 10000**0.5


@pytest.mark.parametrize("kind", ["fixed", "exponential", "lognormal"])
def test_job_lengths_have_the_mean_asked_for(kind: str) -> None:
    jobs = Jobs(kind, 1.5, 0.8)  # type: ignore[arg-type]
    sample = jobs.sample(np.random.default_rng(0), 50_000)
    assert float(sample.mean()) == pytest.approx(1.5, rel=0.03)
    assert np.all(sample >= 0)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kind": "uniform"}, "one of fixed"),
        ({"mean": 0.0}, "positive"),
        ({"sigma": -1.0}, "sigma"),
    ],
)
def test_bad_job_distributions(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Jobs(**kwargs)  # type: ignore[arg-type]


def test_replay_reads_epoch_timestamps_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("timestamp,job_seconds\n1700000010.5,2\n1700000000,1.5\n\n# a comment\n1700000003,0.25\n")
    trace = read_replay(path)
    assert trace.arrivals.tolist() == [0.0, 3.0, 10.5]
    assert trace.jobs.tolist() == [1.5, 0.25, 2.0]
    assert trace.work == pytest.approx(3.75)
    assert trace.duration == 12.0


def test_replay_round_trip(tmp_path: Path) -> None:
    trace = make_trace("t", Steady(4), 120, JOBS, seed=5)
    path = tmp_path / "trace.csv"
    write_replay(trace, path)
    again = read_replay(path)
    assert again.arrivals == pytest.approx(trace.arrivals - trace.arrivals[0], abs=1e-6)
    assert again.jobs == pytest.approx(trace.jobs, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no timestamp,job_seconds rows"),
        ("timestamp,job_seconds\n", "no timestamp,job_seconds rows"),
        ("1,2\n2,abc\n", r"log.csv:2: job_seconds is not a number"),
        ("1,2\nsoon,1\n", r"log.csv:2: timestamp is not a number"),
        ("1,-1\n", "must not be negative"),
        ("1\n", "expected timestamp,job_seconds"),
        ("1,inf\n", "not finite"),
    ],
    ids=["empty", "header only", "bad job", "bad timestamp", "negative job", "one column", "infinite"],
)
def test_replay_says_which_line_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
        read_replay(path)


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_replay(tmp_path / "nope.csv")
