"""The gateway's Prometheus metrics. Load gauges and counters are read at scrape time from plain
fields, so a request pays an integer increment for them, not a lock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuscale_gateway.dispatch import Dispatcher
from gpuscale_gateway.registry import Registry, State
from inference_app.metrics import LATENCY_BUCKETS

# `*_created` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Outcome(StrEnum):
    OK = "ok"  # a replica's answer relayed, whatever its status
    REJECTED_FULL = "rejected_full"  # 429: the gateway's queue was full
    TIMEOUT = "timeout"  # 503: no replica became free within the queue timeout
    UNAVAILABLE = "unavailable"  # 503: draining, or no ready replica for a request that takes no slot
    UPSTREAM_ERROR = "upstream_error"  # 502, or a response cut off mid-body
    CLIENT_GONE = "client_gone"  # the client left while its request waited or its body was streamed


class _Collector(Collector):
    def __init__(self, registry: Registry, dispatcher: Dispatcher, counts: Callable[[], dict[str, int]]):
        self._registry = registry
        self._dispatcher = dispatcher
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        registry, dispatcher = self._registry, self._dispatcher
        yield GaugeMetricFamily(
            "gpuscale_queue_depth",
            "Requests waiting in the gateway for a replica.",
            value=len(dispatcher.queue),
        )
        yield GaugeMetricFamily(
            "gpuscale_inflight_requests",
            "Requests forwarded to a replica and not yet answered.",
            value=dispatcher.inflight,
        )
        yield GaugeMetricFamily(
            "gpuscale_slots",
            "Slots of the ready replicas (requests they run at once).",
            value=registry.ready_slots,
        )
        states = GaugeMetricFamily("gpuscale_gateway_replicas", "Replicas by state.", labels=["state"])
        for state in State:
            states.add_metric([state.value], registry.count(state))
        yield states
        outstanding = GaugeMetricFamily(
            "gpuscale_gateway_replica_outstanding",
            "Requests sent to each replica and not yet answered.",
            labels=["replica"],
        )
        for replica in registry:
            outstanding.add_metric([replica.name], replica.outstanding)
        yield outstanding
        requests = CounterMetricFamily(
            "gpuscale_gateway_requests", "Requests by outcome.", labels=["outcome"]
        )
        counts = self._counts()
        for outcome in Outcome:
            requests.add_metric([outcome.value], counts[outcome.value])
        yield requests
        yield CounterMetricFamily(
            "gpuscale_gateway_retries",
            "Requests sent again to another replica (connect failure, or refused before it ran).",
            value=counts["retries"],
        )


class GatewayMetrics:
    def __init__(self, registry: Registry, dispatcher: Dispatcher) -> None:
        self.registry = CollectorRegistry()
        self.outcomes = dict.fromkeys([o.value for o in Outcome], 0)
        self.retries = 0
        self.queue_wait = Histogram(
            "gpuscale_gateway_queue_wait_seconds",
            "Time requests waited in the gateway before a replica took them.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "gpuscale_gateway_request_duration_seconds",
            "Time from arrival at the gateway to the end of the relayed answer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(registry, dispatcher, self._counts))

    def _counts(self) -> dict[str, int]:
        return {**self.outcomes, "retries": self.retries}

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
