"""The operator's own metrics on /metrics: decisions, scrape errors, reconcile and tick durations, and each
service's desired and ready replicas."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DECISIONS = Counter(
    "gpuscale_operator_scale_decisions_total", "Replica changes made, by direction", ["direction"]
)
SCRAPE_ERRORS = Counter(
    "gpuscale_operator_tick_errors_total", "Ticks that could not read the API or the gateway"
)
RECONCILES = Counter("gpuscale_operator_reconciles_total", "Reconciles of a GpuInferenceService", ["result"])
RECONCILE_SECONDS = Histogram("gpuscale_operator_reconcile_seconds", "Time to apply a service's objects")
TICK_SECONDS = Histogram("gpuscale_operator_tick_seconds", "Time for one control-loop round of a service")
# Per service, as its status says them: a dashboard needs no kube-state-metrics to show the scaling.
# `namespace` is the service's (a ServiceMonitor must honour it: honorLabels).
DESIRED_REPLICAS = Gauge(
    "gpuscale_operator_desired_replicas", "Replicas the control loop wants", ["namespace", "gis"]
)
READY_REPLICAS = Gauge("gpuscale_operator_ready_replicas", "Model pods ready", ["namespace", "gis"])


def set_replicas(namespace: str, name: str, desired: int, ready: int) -> None:
    DESIRED_REPLICAS.labels(namespace, name).set(desired)
    READY_REPLICAS.labels(namespace, name).set(ready)


def forget(namespace: str, name: str) -> None:
    """Drop a service's series when its loop ends (deleted, or the operator stopping)."""
    for gauge in (DESIRED_REPLICAS, READY_REPLICAS):
        with contextlib.suppress(KeyError):  # never set: the loop ended before its first tick
            gauge.remove(namespace, name)


_serving: list[int] = []


def serve(port: int | None) -> None:
    """Serve /metrics on ``port`` once per process (None: not at all)."""
    if port is not None and not _serving:
        start_http_server(port)
        _serving.append(port)
