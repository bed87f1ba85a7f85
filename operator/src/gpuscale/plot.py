"""PNG plots of load runs: replicas, the queue and every request's latency on one time axis.

matplotlib is optional (`pip install 'gpuscale[plot]'`): it is imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuscale.loadstats import LoadResult

READY_REPLICAS = 'gpuscale_gateway_replicas{state="ready"}'
SLOTS = "gpuscale_slots"
QUEUED = "gpuscale_queue_depth"
RUNNING = "gpuscale_inflight_requests"


def _series(result: LoadResult, key: str) -> tuple[list[float], list[float]]:
    points = [(s.t, s.values[key]) for s in result.samples if key in s.values]
    return [t for t, _ in points], [v for _, v in points]


def _no_metrics(ax: Any) -> None:
    ax.text(0.5, 0.5, "no metrics sampled", ha="center", va="center", transform=ax.transAxes, color="grey")


def _rolling(starts: Any, latencies: Any, end: float) -> tuple[Any, Any, Any]:
    """p50 and p95 of the latencies of requests started within a window centred on each grid time."""
    import numpy as np

    grid = np.linspace(0.0, end, 200)
    half = max(end / 40, 1e-3)
    t, p50, p95 = [], [], []
    for g in grid:
        lo, hi = np.searchsorted(starts, g - half), np.searchsorted(starts, g + half, side="right")
        if hi - lo >= 5:  # fewer points make a jumpy line that says nothing
            window = latencies[lo:hi]
            t.append(g)
            p50.append(np.percentile(window, 50))
            p95.append(np.percentile(window, 95))
    return np.array(t), np.array(p50), np.array(p95)


def _draw(axes: Sequence[Any], result: LoadResult, title: str) -> None:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    replicas_ax, queue_ax, latency_ax = axes
    if title:
        replicas_ax.set_title(title, fontsize=10)

    key = READY_REPLICAS if any(READY_REPLICAS in s.values for s in result.samples) else SLOTS
    t, v = _series(result, key)
    if t:
        replicas_ax.step(
            t,
            v,
            where="post",
            color="tab:green",
            label="ready replicas" if key == READY_REPLICAS else "slots",
        )
        replicas_ax.set_ylim(bottom=0, top=max(v) + 1)
        replicas_ax.legend(loc="upper left", fontsize=8)
    else:
        _no_metrics(replicas_ax)
    replicas_ax.set_ylabel("replicas")
    replicas_ax.yaxis.set_major_locator(MaxNLocator(integer=True))

    drawn = False
    for metric, label, colour in ((QUEUED, "queued", "tab:orange"), (RUNNING, "running", "tab:blue")):
        t, v = _series(result, metric)
        if t:
            queue_ax.step(t, v, where="post", color=colour, label=label)
            drawn = True
    if drawn:
        queue_ax.set_ylim(bottom=0)
        queue_ax.legend(loc="upper left", fontsize=8)
    else:
        _no_metrics(queue_ax)
    queue_ax.set_ylabel("requests")
    queue_ax.yaxis.set_major_locator(MaxNLocator(integer=True))

    ok = [r for r in result.records if 200 <= r.status < 300]
    bad = [r for r in result.records if not 200 <= r.status < 300]
    if ok:
        latency_ax.scatter(
            [r.start for r in ok],
            [r.latency for r in ok],
            s=6,
            color="tab:blue",
            alpha=0.5,
            label=f"2xx ({len(ok)})",
        )
    if bad:
        latency_ax.scatter(
            [r.start for r in bad],
            [r.latency for r in bad],
            s=12,
            marker="x",
            color="tab:red",
            alpha=0.7,
            label=f"rejected or failed ({len(bad)})",
        )
    if len(ok) >= 10:
        starts = np.array([r.start for r in ok])  # records are in start order
        rt, p50, p95 = _rolling(starts, np.array([r.latency for r in ok]), float(starts[-1]))
        latency_ax.plot(rt, p50, color="black", linewidth=1.2, label="2xx p50 (rolling)")
        latency_ax.plot(rt, p95, color="black", linewidth=1.2, linestyle="--", label="2xx p95 (rolling)")
    latencies = [r.latency for r in result.records if r.latency > 0]
    # Refusals take milliseconds and served requests seconds: only a log scale shows both.
    if latencies and max(latencies) / min(latencies) > 100:
        latency_ax.set_yscale("log")
    if result.records:
        # Above the panel: inside it would hide points wherever it sat.
        latency_ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=2, fontsize=7, frameon=False)
    else:
        latency_ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=latency_ax.transAxes)
    latency_ax.set_ylabel("latency (s)")
    latency_ax.set_xlabel("time since start (s)")
    latency_ax.set_xlim(
        left=0, right=max(result.wall_seconds, max((s.t for s in result.samples), default=0), 1e-3)
    )
    for ax in axes:
        ax.grid(True, alpha=0.3)


def figure(
    rows: int,
    columns: int,
    *,
    column_width: float = 6.5,
    height: float = 8.0,
    height_ratios: Sequence[float] | None = (1, 1, 2),
) -> tuple[Any, Any]:
    """A figure of panels sharing their time axis (and each row its y axis), drawn to files only."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed, and none is opened
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(column_width * columns, height), layout="constrained")
    FigureCanvasAgg(fig)
    ratios = list(height_ratios) if height_ratios is not None else None
    axes = fig.subplots(rows, columns, sharex=True, sharey="row", squeeze=False, height_ratios=ratios)
    return fig, axes


def plot_run(result: LoadResult, path: str, title: str = "") -> None:
    """One run as three panels on one time axis: replicas, queued and running, each request's latency."""
    fig, axes = figure(3, 1)
    _draw(axes[:, 0], result, title)
    fig.savefig(path, dpi=110)


def plot_runs(results: Sequence[tuple[str, LoadResult]], path: str) -> None:
    """Runs side by side, one column each, with the same axes, to compare policies at a glance."""
    if not results:
        raise ValueError("plot_runs needs at least one run")
    fig, axes = figure(3, len(results))
    for column, (label, result) in enumerate(results):
        _draw(axes[:, column], result, label)
    fig.savefig(path, dpi=110)
