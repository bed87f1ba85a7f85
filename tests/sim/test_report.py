"""Figures from runs, the goals, and the results page's blocks."""

from __future__ import annotations

import numpy as np
import pytest
from gpuscale.markdown import fill_blocks
from gpuscale.sim.model import SimConfig, simulate
from gpuscale.sim.policies import Fixed
from gpuscale.sim.report import Summary, goals, results_table, summarize
from gpuscale.sim.traces import Trace


def test_summary_of_hand_made_runs() -> None:
    trace = Trace("t", "t", 10.0, np.array([0.0, 0.1, 0.2, 0.3]), np.array([1.0, 1.0, 1.0, 1.0]))
    runs = [simulate(trace, lambda _lo, _hi, _n: Fixed(1), SimConfig(phase=0.0), 1, 1, initial=1)] * 2
    s = summarize("one replica", runs)
    assert s.seeds == 2
    assert s.requests == 8
    assert s.served == 8
    # Latencies 1.0, 1.9, 2.8, 3.7 twice over: pooled percentiles interpolate between them.
    assert s.p50 == pytest.approx(2.35)
    assert s.wait_p95 == pytest.approx(np.percentile([0.0, 0.9, 1.8, 2.7] * 2, 95))
    assert s.replica_seconds == pytest.approx(2 * 10.0)
    assert s.work == pytest.approx(8.0)
    assert s.cost_ratio == pytest.approx(2.5)
    assert "| one replica | 1.00 s |" not in results_table([s])  # p50 is 2.35 s
    assert "| t | one replica | 2.35 s |" in results_table([s])


def summary(label: str, p95: float, replica_seconds: float, work: float = 100.0) -> Summary:
    return Summary(
        label=label,
        trace="spike",
        seeds=1,
        requests=1,
        served=1,
        rejected=0,
        unfinished=0,
        p50=1.0,
        p95=p95,
        p99=p95,
        wait_p50=0.0,
        wait_p95=p95,
        wait_p99=p95,
        mean_wait=0.0,
        replica_seconds=replica_seconds,
        work=work,
        scale_ups=1,
        scale_downs=1,
        replicas_started=1,
        busy_removed=0,
        peak_replicas=1,
        wall_seconds=0.1,
    )


def test_goals_are_checked_on_the_figures() -> None:
    by_trace = {
        "spike": {
            "gpuscale": summary("gpuscale", p95=10.0, replica_seconds=100.0),
            "hpa": summary("HPA", p95=31.0, replica_seconds=120.0),  # 3.1x slower, dearer: met
            "keda": summary("KEDA", p95=29.0, replica_seconds=120.0),  # 2.9x: missed
            "kpa": summary("Knative KPA", p95=10.0, replica_seconds=101.0),  # as fast, dearer: met
        },
        "steady": {"gpuscale": summary("gpuscale", p95=2.0, replica_seconds=109.0)},
    }
    found = goals(by_trace, "gpuscale")
    assert [(g.trace, g.met) for g in found] == [
        ("spike", True),
        ("spike", False),
        ("spike", True),
        ("steady", True),
    ]
    assert "3.1x lower" in found[0].measured


def test_goals_missed_on_cost() -> None:
    by_trace = {
        "step": {
            "gpuscale": summary("gpuscale", p95=1.0, replica_seconds=130.0),
            "hpa": summary("HPA", p95=30.0, replica_seconds=120.0),
            "kpa": summary("Knative KPA", p95=2.0, replica_seconds=120.0),
        },
        "steady": {"gpuscale": summary("gpuscale", p95=2.0, replica_seconds=111.0)},
    }
    assert [g.met for g in goals(by_trace, "gpuscale")] == [False, False, False]


def test_fill_blocks_replaces_only_the_named_blocks() -> None:
    text = "intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n"
    text += "middle\n<!-- bench:b -->\n<!-- /bench:b -->\nend\n"
    filled = fill_blocks(text, {"a": "new a\nline 2", "b": "new b"})
    assert filled == (
        "intro\n<!-- bench:a -->\nnew a\nline 2\n<!-- /bench:a -->\nmiddle\n"
        "<!-- bench:b -->\nnew b\n<!-- /bench:b -->\nend\n"
    )
    assert fill_blocks(filled, {"a": "again"}).count("again") == 1
    with pytest.raises(ValueError, match="no <!-- bench:c --> block"):
        fill_blocks(text, {"c": "x"})
