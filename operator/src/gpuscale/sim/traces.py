"""Arrival traces and job lengths: seeded, so one seed gives one trace, whatever is simulated on it.

Arrivals are a Poisson process whose rate follows a shape (steady, step, spike, diurnal sine), drawn by
thinning (Lewis and Shedler): a homogeneous process at the shape's peak rate, each arrival kept with
probability rate(t) / peak. Or they replay a CSV of `timestamp,job_seconds` rows. Arrivals and job
lengths come from separate random streams, so a different job distribution leaves the arrival times alone.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
JobKind = Literal["fixed", "exponential", "lognormal"]
JOB_KINDS: tuple[JobKind, ...] = ("fixed", "exponential", "lognormal")
DAY = 86400.0


def _stream(seed: int, purpose: int) -> np.random.Generator:
    """One independent generator per purpose (0 arrivals, 1 jobs, 2 the model's own draws)."""
    return np.random.default_rng([seed, purpose])


@dataclass(frozen=True)
class Steady:
    rate: float

    @property
    def peak(self) -> float:
        return self.rate

    def rates(self, t: FloatArray) -> FloatArray:
        return np.full_like(t, self.rate)

    def describe(self) -> str:
        return f"Poisson at {self.rate:g} req/s"


@dataclass(frozen=True)
class Step:
    """`low` req/s, `high` from `start` for `length` seconds (for ever when `length` is None), then `low`."""

    low: float
    high: float
    start: float
    length: float | None = None

    @property
    def peak(self) -> float:
        return max(self.low, self.high)

    def rates(self, t: FloatArray) -> FloatArray:
        end = math.inf if self.length is None else self.start + self.length
        return np.where((t >= self.start) & (t < end), self.high, self.low)

    def describe(self) -> str:
        until = "" if self.length is None else f" for {self.length / 60:g} min, then back"
        return f"Poisson at {self.low:g} req/s, {self.high:g} req/s from {self.start / 60:g} min{until}"


@dataclass(frozen=True)
class Spike(Step):
    """A step that is short and tall; the same arithmetic, described as a spike."""

    def describe(self) -> str:
        length = 0.0 if self.length is None else self.length
        return (
            f"Poisson at {self.low:g} req/s with a spike to {self.high:g} req/s for {length:g} s "
            f"at {self.start / 60:g} min"
        )


@dataclass(frozen=True)
class Diurnal:
    """A sine between `low` and `high` req/s over `period` seconds, highest at `peak_at`."""

    low: float
    high: float
    period: float = DAY
    peak_at: float = 14 * 3600.0

    @property
    def peak(self) -> float:
        return max(self.low, self.high)

    def rates(self, t: FloatArray) -> FloatArray:
        phase = 2 * np.pi * (t - self.peak_at) / self.period
        return self.low + (self.high - self.low) * (1 + np.cos(phase)) / 2

    def describe(self) -> str:
        hours = self.period / 3600
        return (
            f"Poisson, a {hours:g} h sine from {self.low:g} to {self.high:g} req/s "
            f"(highest at {self.peak_at / 3600:g} h)"
        )


Shape = Steady | Step | Spike | Diurnal


@dataclass(frozen=True)
class Jobs:
    """Job lengths (seconds on the GPU) with mean `mean`; `sigma` is the lognormal's shape."""

    kind: JobKind = "lognormal"
    mean: float = 1.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise ValueError(f"job distribution must be one of {', '.join(JOB_KINDS)}, not {self.kind!r}")
        if not self.mean > 0:
            raise ValueError(f"mean job length must be positive, not {self.mean:g}")
        if not self.sigma > 0:
            raise ValueError(f"lognormal sigma must be positive, not {self.sigma:g}")

    def sample(self, rng: np.random.Generator, count: int) -> FloatArray:
        if self.kind == "fixed":
            return np.full(count, self.mean)
        if self.kind == "exponential":
            return rng.exponential(self.mean, count)
        # mu chosen so that the mean, not the median, is `mean`
        mu = math.log(self.mean) - self.sigma**2 / 2
        return rng.lognormal(mu, self.sigma, count)

    def describe(self) -> str:
        if self.kind == "lognormal":
            return f"lognormal jobs, mean {self.mean:g} s (sigma {self.sigma:g})"
        return f"{self.kind} jobs, mean {self.mean:g} s"


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration: float
    arrivals: FloatArray  # seconds from the start, ascending
    jobs: FloatArray  # seconds on the GPU, one per arrival

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    @property
    def work(self) -> float:
        """GPU-seconds the trace needs: the replica-seconds no autoscaler can go below."""
        return float(self.jobs.sum())


def poisson_arrivals(shape: Shape, duration: float, rng: np.random.Generator) -> FloatArray:
    peak = shape.peak
    if peak <= 0 or duration <= 0:
        return np.zeros(0)
    count = int(rng.poisson(peak * duration))
    times = np.sort(rng.uniform(0.0, duration, count))
    keep = rng.uniform(0.0, 1.0, count) * peak < shape.rates(times)
    return times[keep]


def make_trace(name: str, shape: Shape, duration: float, jobs: Jobs, seed: int) -> Trace:
    if not duration > 0:
        raise ValueError(f"duration must be positive, not {duration:g}")
    arrivals = poisson_arrivals(shape, duration, _stream(seed, 0))
    lengths = jobs.sample(_stream(seed, 1), len(arrivals))
    description = f"{shape.describe()}, {span(duration)}; {jobs.describe()}"
    return Trace(name, description, duration, arrivals, lengths)


def span(seconds: float) -> str:
    if seconds >= 3 * 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 120:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} is not finite: {text!r}")
    return value


def read_replay(path: str | Path, name: str = "replay") -> Trace:
    """A trace from `timestamp,job_seconds` rows (a header row is allowed). Timestamps are seconds (epoch
    or relative), in any order; the first arrival is at 0. Raises ValueError saying which line is wrong."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{source}: cannot read: {exc.strerror}") from None
    rows: list[tuple[float, float]] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{source}:{number}"
        if len(row) < 2:
            raise ValueError(f"{where}: expected timestamp,job_seconds, got {','.join(row)!r}")
        if not rows and number == 1 and not _looks_numeric(row[0]):
            continue  # a header
        stamp = _number(row[0].strip(), "timestamp", where)
        job = _number(row[1].strip(), "job_seconds", where)
        if job < 0:
            raise ValueError(f"{where}: job_seconds must not be negative, got {job:g}")
        rows.append((stamp, job))
    if not rows:
        raise ValueError(f"{source}: no timestamp,job_seconds rows")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    arrivals = np.array([stamp - first for stamp, _ in rows])
    jobs = np.array([job for _, job in rows])
    duration = max(1.0, math.ceil(float(arrivals[-1])) + 1.0)
    description = f"replay of {Path(path).name}: {len(rows)} requests over {span(duration)}"
    return Trace(name, description, duration, arrivals, jobs)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_replay(trace: Trace, path: str | Path) -> None:
    """The trace as a CSV that `read_replay` reads back (what a replay of a real log looks like)."""
    lines = ["timestamp,job_seconds"]
    lines += [f"{t:.6f},{j:.6f}" for t, j in zip(trace.arrivals, trace.jobs, strict=True)]
    Path(path).write_text("\n".join(lines) + "\n")
