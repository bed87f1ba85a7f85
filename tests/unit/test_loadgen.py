"""The load generator's pure parts: statistics, counting, the report, JSON, the open-loop schedule."""

from __future__ import annotations

import itertools
import json
import statistics

import pytest
from gpuscale.loadgen import (
    LoadResult,
    LoadSpec,
    MetricsSample,
    RequestRecord,
    arrival_times,
    failed_to_connect,
    histogram,
    percentiles,
)
from hypothesis import given
from hypothesis import strategies as st

URL = "http://127.0.0.1:8000/v2/models/sleep/infer"
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def record(status: int, latency: float = 0.1, error: str | None = None, start: float = 0.0) -> RequestRecord:
    return RequestRecord(start=start, latency=latency, status=status, error=error, replica=None)


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentiles(values, [0, 50, 90, 100]) == {0: 1.0, 50: 5.5, 90: 9.1, 100: 10.0}
    assert percentiles([3.0, 1.0, 2.0], [50]) == {50: 2.0}  # order of the input does not matter
    assert percentiles([7.0], [10, 99]) == {10: 7.0, 99: 7.0}


def test_percentiles_refuse_no_values_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentiles([], [50])
    with pytest.raises(ValueError, match="within 0 and 100"):
        percentiles([1.0], [101])


@given(st.lists(finite, min_size=1), st.lists(st.floats(min_value=0, max_value=100), min_size=2))
def test_percentiles_are_monotonic_and_within_the_values(values: list[float], qs: list[float]) -> None:
    result = percentiles(values, sorted(qs))
    ordered = [result[q] for q in sorted(qs)]
    assert ordered == sorted(ordered)
    assert all(min(values) <= v <= max(values) for v in ordered)


def test_histogram_buckets_are_equal_width_from_fastest_to_slowest() -> None:
    buckets = histogram([0.0, 0.05, 0.1, 0.15, 0.95, 1.0], buckets=10)
    assert [round(edge, 6) for edge, _ in buckets] == [round(0.1 * i, 6) for i in range(1, 11)]
    # (lower, upper]: 0.1 falls in the first bucket, 0.15 in the second; the first includes 0.0
    assert [count for _, count in buckets] == [3, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_histogram_edge_cases() -> None:
    assert histogram([]) == []
    assert histogram([0.5, 0.5, 0.5]) == [(0.5, 3)]


@given(st.lists(finite, min_size=1), st.integers(min_value=1, max_value=20))
def test_histogram_counts_every_value_once(values: list[float], buckets: int) -> None:
    result = histogram(values, buckets)
    assert sum(count for _, count in result) == len(values)
    assert result[-1][0] == max(values)


def test_summary_counts_2xx_rejected_and_failed() -> None:
    records = [
        record(200, 0.5),
        record(201, 1.5),
        record(429, 0.001),
        record(503, 0.002),
        record(500),
        record(404),
        record(0, 0.01, "ConnectError: [Errno 111] Connection refused"),
        record(0, 3.0, "cancelled"),
    ]
    s = LoadResult(LoadSpec(URL), records, wall_seconds=2.0).summary()
    assert (s["sent"], s["ok_2xx"], s["rejected"], s["failed"], s["transport_errors"]) == (8, 2, 2, 4, 2)
    assert s["rps"] == 4.0
    # latency figures are the 2xx answers' only
    assert (s["fastest"], s["max"], s["mean"], s["p50"]) == (0.5, 1.5, 1.0, 1.0)


def test_summary_without_2xx_has_zero_latency_figures() -> None:
    s = LoadResult(LoadSpec(URL), [record(429)], wall_seconds=1.0).summary()
    assert (s["ok_2xx"], s["rejected"], s["p99"], s["max"]) == (0, 1, 0.0, 0.0)


def test_report_has_the_sections_of_hey() -> None:
    records = [record(200, 0.1 * i, start=0.01 * i) for i in range(1, 21)]
    records += [record(429, 0.001), record(0, 0.01, "ConnectError: refused")]
    records[0].replica = "127.0.0.2:8000"
    report = LoadResult(LoadSpec(URL), records, wall_seconds=2.2).report()
    for section in (
        "Summary:",
        "Total:\t2.2000 secs",
        "Slowest:\t2.0000 secs",
        "Fastest:\t0.1000 secs",
        "Requests/sec:\t10.0000",
        "Sent 22   answered 2xx 20   rejected (429, 503) 1   failed 1",
        "Response time histogram",
        "Latency distribution",
        "  50% in 1.0500 secs",
        "  99% in 1.9810 secs",
        "Status code distribution:",
        "[200]\t20 responses",
        "[429]\t1 responses",
        "Error distribution:",
        "[1]\tConnectError: refused",
        "[127.0.0.2:8000]\t1 responses",
    ):
        assert section in report
    bars = report.split("Response time histogram")[1].split("Latency distribution")[0]
    assert bars.count("|") == 10
    assert "■" * 40 in bars  # the fullest bucket has the longest bar


def test_report_without_answers_says_so() -> None:
    report = LoadResult(LoadSpec(URL), [record(0, 0.0, "ConnectError: x")], wall_seconds=0.1).report()
    assert "No 2xx answers" in report
    assert "Response time histogram" not in report
    assert "[1]\tConnectError: x" in report


def test_json_round_trip() -> None:
    spec = LoadSpec(URL, "POST", b'{"parameters": {"seconds": 0.05}}', {"X-Test": "1"}, rate=5.0, seed=3)
    result = LoadResult(
        spec,
        [record(200, 0.2, start=0.1), record(0, 0.01, "ReadTimeout", start=0.3)],
        [MetricsSample(0.0, {"gpuscale_queue_depth": 2.0, 'gpuscale_gateway_replicas{state="ready"}': 1.0})],
        wall_seconds=1.25,
        metrics_url="http://127.0.0.1:9000/metrics",
        scrape_errors=1,
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["summary"]["sent"] == 2
    assert data["records"][1] == {
        "start": 0.3,
        "latency": 0.01,
        "status": 0,
        "error": "ReadTimeout",
        "replica": None,
    }
    assert LoadResult.from_json(data) == result


def test_spec_defaults_and_validation() -> None:
    assert LoadSpec(URL).requests == 200
    assert LoadSpec(URL, duration=5).requests is None
    assert LoadSpec(URL, method="post").method == "POST"
    with pytest.raises(ValueError, match="http:// or https://"):
        LoadSpec("localhost:8000")
    with pytest.raises(ValueError, match="concurrency must be positive"):
        LoadSpec(URL, concurrency=0)
    with pytest.raises(ValueError, match="rate must be positive"):
        LoadSpec(URL, rate=-1.0)


def test_failed_to_connect_only_when_no_request_connected() -> None:
    refused = record(0, 0.0, "ConnectError: [Errno 111] Connection refused")
    assert failed_to_connect(LoadResult(LoadSpec(URL), [refused, refused]))
    assert not failed_to_connect(LoadResult(LoadSpec(URL), [refused, record(429)]))
    assert not failed_to_connect(LoadResult(LoadSpec(URL), [record(0, 900.0, "ReadTimeout")]))
    assert not failed_to_connect(LoadResult(LoadSpec(URL), []))


def test_even_arrivals_are_rate_per_second() -> None:
    times = list(itertools.takewhile(lambda t: t < 2.0, arrival_times(10.0)))
    assert len(times) == 20
    assert times[:3] == [0.0, 0.1, 0.2]
    assert len(list(itertools.takewhile(lambda t: t < 1.0, arrival_times(3.0)))) == 3


def test_poisson_arrivals_are_reproducible_with_a_seed_and_have_the_right_mean() -> None:
    first = list(itertools.islice(arrival_times(10.0, poisson=True, seed=7), 4000))
    again = list(itertools.islice(arrival_times(10.0, poisson=True, seed=7), 4000))
    other = list(itertools.islice(arrival_times(10.0, poisson=True, seed=8), 4000))
    assert first == again
    assert first != other
    gaps = [b - a for a, b in itertools.pairwise([0.0, *first])]
    assert all(g > 0 for g in gaps)
    # The mean gap is 1/rate; its standard error over 4000 gaps is 1.6 %, the bound is 6 of them.
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.1)
    # exponential gaps: the standard deviation equals the mean (even spacing would give 0)
    assert statistics.stdev(gaps) == pytest.approx(0.1, rel=0.15)


def test_arrival_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        next(arrival_times(0.0))


def test_concurrent_runs_combine_their_requests_and_keep_the_first_runs_samples() -> None:
    sample = MetricsSample(t=0.5, values={"gpuscale_queue_depth": 2.0})
    steady = LoadResult(LoadSpec(URL), [record(200, start=0.0), record(200, start=2.0)], [sample], 3.0)
    burst = LoadResult(LoadSpec(URL), [record(429, start=1.0)], [], 1.5)
    both = steady.with_requests_of(burst)
    assert [r.start for r in both.records] == [0.0, 1.0, 2.0]
    assert (both.samples, both.wall_seconds, both.spec) == ([sample], 3.0, steady.spec)
    assert both.summary()["rejected"] == 1
    assert len(steady.records) == 2  # the runs combined are left as they were
