"""PNG timelines of simulated runs: one column per autoscaler on the same trace, the same axes in a row
(arrivals per second; replicas holding a GPU and ready; requests waiting). matplotlib (the `plot` extra)
is imported only when a plot is drawn (`gpuscale.plot.figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpuscale.plot import figure
from gpuscale.sim.model import RunResult


def _hours(duration: float) -> bool:
    return duration > 3 * 3600


def plot_timelines(runs: Sequence[tuple[str, RunResult]], path: str | Path, title: str = "") -> None:
    if not runs:
        raise ValueError("plot_timelines needs at least one run")
    fig, axes = figure(3, len(runs), column_width=3.6, height=6.4, height_ratios=None)
    trace = runs[0][1].trace
    in_hours = _hours(trace.duration)
    scale = 3600.0 if in_hours else 60.0
    unit = "h" if in_hours else "min"
    for column, (label, run) in enumerate(runs):
        timeline = run.timeline
        t = np.asarray(timeline.t)
        step = float(t[1] - t[0]) if len(t) > 1 else 1.0
        edges = np.arange(0.0, run.end + step, step)
        counts, _ = np.histogram(run.trace.arrivals, bins=edges)
        top, middle, bottom = axes[0, column], axes[1, column], axes[2, column]
        top.plot(edges[:-1] / scale, counts / step, color="tab:gray", linewidth=0.8)
        top.set_title(label, fontsize=10)
        middle.plot(t / scale, timeline.replicas, color="tab:red", linewidth=1.0, label="holding a GPU")
        middle.plot(t / scale, timeline.ready, color="tab:green", linewidth=0.8, label="ready")
        bottom.plot(t / scale, timeline.queued, color="tab:blue", linewidth=0.8)
        bottom.set_xlabel(f"time ({unit})")
        for ax in (top, middle, bottom):
            ax.grid(True, alpha=0.3)
            if run.warmup > 0:
                ax.axvspan(0, run.warmup / scale, color="0.92", zorder=0)
    axes[0, 0].set_ylabel("arrivals / s")
    axes[1, 0].set_ylabel("replicas")
    axes[1, 0].legend(loc="upper left", fontsize=8)
    axes[2, 0].set_ylabel("waiting")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(str(path), dpi=90)
