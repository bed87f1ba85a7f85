"""What a load run produced (`LoadSpec`, `RequestRecord`, `MetricsSample`, `LoadResult`), and the pure
statistics and report built from it. No I/O library here: results load from JSON without httpx."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

DEFAULT_REQUESTS = 200  # like hey, when neither a count nor a duration is given
PERCENTS = (10, 25, 50, 75, 90, 95, 99)
REJECTED = frozenset({429, 503})  # "come back later": the service is full, nothing was lost by error
CANCELLED = "cancelled"  # the error of a request still in flight when the run was stopped


@dataclass
class LoadSpec:
    """What to send, and how. With neither `requests` nor `duration`, it sends 200 requests; with both, it
    stops at whichever comes first. `rate` set means open loop: arrivals on a schedule, whatever the
    answers do, at most `max_outstanding` unanswered (`concurrency` then does not apply)."""

    url: str
    method: str = "GET"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    concurrency: int = 10
    rate: float | None = None
    poisson: bool = False
    requests: int | None = None
    duration: float | None = None
    timeout: float = 900.0
    max_outstanding: int = 10000
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"URL must start with http:// or https://, got {self.url!r}")
        for name in ("concurrency", "rate", "requests", "duration", "timeout", "max_outstanding"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.requests is None and self.duration is None:
            self.requests = DEFAULT_REQUESTS
        self.method = self.method.upper()

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def max_in_flight(self) -> int:
        """The most requests unanswered at once: `max_outstanding` open loop, `concurrency` closed."""
        return self.max_outstanding if self.open_loop else self.concurrency

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["body"] = None if self.body is None else self.body.decode("utf-8", "replace")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        body = data.get("body")
        return cls(**{**data, "body": None if body is None else body.encode()})


@dataclass
class RequestRecord:
    start: float  # seconds from the run's start to just before the request was sent
    latency: float  # seconds from then to the whole body read (or to the error)
    status: int  # 0: no HTTP answer (transport error, or cancelled by a stop)
    error: str | None = None  # "ConnectError: ...", "ReadTimeout", "cancelled"; None with any status
    replica: str | None = None  # the `gpuscale-replica` response header the gateway sets


@dataclass
class MetricsSample:
    t: float  # seconds from the run's start
    values: dict[str, float]  # keys as gpuscale.promtext.parse_samples makes them


@dataclass
class LoadResult:
    spec: LoadSpec
    records: list[RequestRecord]
    samples: list[MetricsSample] = field(default_factory=list)
    wall_seconds: float = 0.0
    metrics_url: str | None = None
    scrape_errors: int = 0  # metrics scrapes that failed (the run carries on without them)

    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if 200 <= r.status < 300]

    def with_requests_of(self, *others: LoadResult) -> LoadResult:
        """This run with the requests of runs started at the same moment (a burst on top of a steady
        client, say); the metrics samples and the wall time stay this run's."""
        records = sorted([r for run in (self, *others) for r in run.records], key=lambda r: r.start)
        return replace(self, records=records)

    def summary(self) -> dict[str, float | int]:
        """Counts, and the latency figures (seconds) of the 2xx answers: a refusal's few milliseconds
        would make a service that refuses look fast. Latency figures are 0.0 when nothing got a 2xx."""
        ok = len(self.ok())
        rejected = sum(r.status in REJECTED for r in self.records)
        transport = sum(r.status == 0 for r in self.records)
        latencies = [r.latency for r in self.ok()]
        pct = percentiles(latencies, (50, 90, 95, 99)) if latencies else dict.fromkeys((50, 90, 95, 99), 0.0)
        return {
            "sent": len(self.records),
            "ok_2xx": ok,
            "rejected": rejected,
            "failed": len(self.records) - ok - rejected,
            "transport_errors": transport,
            "wall_seconds": self.wall_seconds,
            "rps": len(self.records) / self.wall_seconds if self.wall_seconds > 0 else 0.0,
            "mean": math.fsum(latencies) / len(latencies) if latencies else 0.0,
            "p50": pct[50],
            "p90": pct[90],
            "p95": pct[95],
            "p99": pct[99],
            "max": max(latencies, default=0.0),
            "fastest": min(latencies, default=0.0),
        }

    def counts_line(self) -> str:
        """What became of every request sent: the line "nothing lost" is read from."""
        s = self.summary()
        return (
            f"Sent {s['sent']}   answered 2xx {s['ok_2xx']}   rejected (429, 503) {s['rejected']}   "
            f"failed {s['failed']} (other statuses and transport errors)"
        )

    def summary_line(self) -> str:
        s = self.summary()
        line = f"{self.counts_line()}   in {s['wall_seconds']:.2f} s"
        if s["ok_2xx"]:
            line += f"   2xx latency p50 {s['p50']:.4f} s  p95 {s['p95']:.4f} s  p99 {s['p99']:.4f} s"
        return line

    def report(self) -> str:
        return format_report(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(),
            "summary": self.summary(),
            "wall_seconds": self.wall_seconds,
            "metrics_url": self.metrics_url,
            "scrape_errors": self.scrape_errors,
            "records": [asdict(r) for r in self.records],
            "samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        return cls(
            spec=LoadSpec.from_json(data["spec"]),
            records=[RequestRecord(**r) for r in data["records"]],
            samples=[MetricsSample(**s) for s in data["samples"]],
            wall_seconds=data["wall_seconds"],
            metrics_url=data.get("metrics_url"),
            scrape_errors=data.get("scrape_errors", 0),
        )


def percentiles(values: Iterable[float], qs: Sequence[float]) -> dict[float, float]:
    """Each percentile q (0 to 100) of `values`, interpolated linearly between the closest ranks (as
    numpy.percentile does by default). Raises ValueError on no values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentiles of no values")
    result: dict[float, float] = {}
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0 and 100, got {q}")
        rank = (len(ordered) - 1) * q / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        result[q] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return result


def histogram(values: Iterable[float], buckets: int = 10) -> list[tuple[float, int]]:
    """`buckets` equal-width buckets from the smallest value to the largest, as (upper edge, count); the
    first bucket includes its lower edge. One bucket when every value is the same; none for no values."""
    ordered = sorted(values)
    if not ordered:
        return []
    low, high = ordered[0], ordered[-1]
    if high == low:
        return [(high, len(ordered))]
    width = (high - low) / buckets
    counts = [0] * buckets
    for value in ordered:
        # ceil, so a value on an edge counts in the bucket below it: buckets are (lower, upper]
        counts[max(0, min(buckets - 1, math.ceil((value - low) / width) - 1))] += 1
    edges = [low + width * (i + 1) for i in range(buckets)]
    edges[-1] = high  # no float drift on the last edge: the slowest value shows as itself
    return list(zip(edges, counts, strict=True))


def format_report(result: LoadResult) -> str:
    """hey's report layout, with the latency sections over the 2xx answers."""
    s = result.summary()
    ok = [r.latency for r in result.ok()]
    lines = ["", "Summary:"]
    lines.append(f"  Total:\t{result.wall_seconds:.4f} secs")
    if ok:
        lines += [
            f"  Slowest:\t{s['max']:.4f} secs",
            f"  Fastest:\t{s['fastest']:.4f} secs",
            f"  Average:\t{s['mean']:.4f} secs",
        ]
    lines.append(f"  Requests/sec:\t{s['rps']:.4f}")
    lines += ["", "  " + result.counts_line(), ""]
    if ok:
        bars = histogram(ok)
        most = max(count for _, count in bars)
        lines.append(f"Response time histogram (the {len(ok)} 2xx answers):")
        for edge, count in bars:
            lines.append(f"  {edge:.3f} [{count}]\t|{'■' * round(40 * count / most)}")
        lines += ["", "Latency distribution (2xx answers):"]
        for q, value in percentiles(ok, PERCENTS).items():
            lines.append(f"  {q:g}% in {value:.4f} secs")
    else:
        lines.append("No 2xx answers: no latency figures.")
    lines += ["", "Status code distribution:"]
    statuses = Counter(r.status for r in result.records if r.status)
    lines += [f"  [{code}]\t{n} responses" for code, n in sorted(statuses.items())] or ["  (none)"]
    errors = Counter(r.error for r in result.records if r.status == 0)
    if errors:
        lines += ["", "Error distribution:"]
        lines += [f"  [{n}]\t{error}" for error, n in errors.most_common()]
    replicas = Counter(r.replica for r in result.records if r.replica)
    if replicas:
        lines += ["", "Replica distribution (gpuscale-replica header):"]
        lines += [f"  [{replica}]\t{n} responses" for replica, n in sorted(replicas.items())]
    if result.metrics_url:
        failed = f", {result.scrape_errors} scrapes failed" if result.scrape_errors else ""
        lines += ["", f"Metrics: {len(result.samples)} samples from {result.metrics_url}{failed}"]
    return "\n".join(lines) + "\n"
