"""The operator's own metrics on /metrics: decisions, scrape errors, reconcile and tick durations."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

DECISIONS = Counter(
    "gpuscale_operator_scale_decisions_total", "Replica changes made, by direction", ["direction"]
)
SCRAPE_ERRORS = Counter(
    "gpuscale_operator_tick_errors_total", "Ticks that could not read the API or the gateway"
)
RECONCILES = Counter("gpuscale_operator_reconciles_total", "Reconciles of a GpuInferenceService", ["result"])
RECONCILE_SECONDS = Histogram("gpuscale_operator_reconcile_seconds", "Time to apply a service's objects")
TICK_SECONDS = Histogram("gpuscale_operator_tick_seconds", "Time for one control-loop round of a service")

_serving: list[int] = []


def serve(port: int | None) -> None:
    """Serve /metrics on ``port`` once per process (None: not at all)."""
    if port is not None and not _serving:
        start_http_server(port)
        _serving.append(port)
