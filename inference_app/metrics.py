"""Prometheus metrics of one pod server. The load gauges are read at scrape time, so the request path
pays nothing for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_app.slots import Load

# `*_created` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# From 5 ms jobs to 15-minute ones: the range a GPU inference pod serves.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
)  # fmt: skip


class Outcome(StrEnum):
    OK = "ok"
    INVALID = "invalid"  # 400/422: the request could not be served as asked
    NOT_FOUND = "not_found"  # 404: no such model here
    REJECTED_FULL = "rejected_full"  # 429: slots busy and queue full
    UNAVAILABLE = "unavailable"  # 503: loading or draining
    CANCELLED = "cancelled"  # client left while queued; the job never ran
    ABANDONED = "abandoned"  # client left while its job ran; the result was dropped
    FAILED = "failed"  # 500: the model raised
    ABORTED = "aborted"  # 503: admitted, but the drain deadline (or a forced stop) came first


class _LoadCollector(Collector):
    def __init__(self, load: Callable[[], Load], ready: Callable[[], bool], draining: Callable[[], bool]):
        self._load = load
        self._ready = ready
        self._draining = draining

    def collect(self) -> Iterator[Metric]:
        load = self._load()
        yield GaugeMetricFamily(
            "gpuscale_queue_depth", "Requests admitted and waiting for a slot.", value=load.queued
        )
        yield GaugeMetricFamily(
            "gpuscale_inflight_requests", "Requests running on the model now.", value=load.running
        )
        yield GaugeMetricFamily("gpuscale_slots", "Requests the model runs at once.", value=load.slots)
        yield CounterMetricFamily(
            "gpuscale_slot_busy_seconds",
            "Slot-seconds spent running jobs (divide its rate by gpuscale_slots for utilisation).",
            value=load.busy_seconds,
        )
        yield GaugeMetricFamily(
            "gpuscale_ready", "1 when the model is loaded and not draining.", value=self._ready()
        )
        yield GaugeMetricFamily("gpuscale_draining", "1 after SIGTERM, until exit.", value=self._draining())


class PodMetrics:
    def __init__(self, load: Callable[[], Load], ready: Callable[[], bool], draining: Callable[[], bool]):
        self.registry = CollectorRegistry()

        def histogram(name: str, documentation: str) -> Histogram:
            return Histogram(name, documentation, buckets=LATENCY_BUCKETS, registry=self.registry)

        self.queue_wait = histogram(
            "gpuscale_queue_wait_seconds", "Time admitted requests waited for a slot."
        )
        self.service = histogram("gpuscale_service_seconds", "Time requests held a slot (model work).")
        self.latency = histogram(
            "gpuscale_request_duration_seconds", "Time from admission to answer, for requests that ran."
        )
        self.requests = Counter(
            "gpuscale_requests", "Inference requests by outcome.", ["outcome"], registry=self.registry
        )
        # Children made up front: every outcome shows from the first scrape, and counting is one lookup.
        self._by_outcome = {outcome: self.requests.labels(outcome.value) for outcome in Outcome}
        self.registry.register(_LoadCollector(load, ready, draining))

    def count(self, outcome: Outcome) -> None:
        self._by_outcome[outcome].inc()

    def observe(self, queue_seconds: float, service_seconds: float, total_seconds: float) -> None:
        self.queue_wait.observe(queue_seconds)
        self.service.observe(service_seconds)
        self.latency.observe(total_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
