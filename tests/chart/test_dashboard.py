"""The chart's Grafana dashboard: every metric it queries is one the code exposes (read from the real
registries of the pod server, the gateway and the operator, not from a list), it shows what an operator of
the service needs, and the chart ships it as a ConfigMap for Grafana's sidecar."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import gpuscale.kube.metrics  # noqa: F401  (registers the operator's metrics in the default registry)
import prometheus_client
import pytest
from prometheus_client.registry import CollectorRegistry

from gpuscale_gateway.dispatch import Dispatcher
from gpuscale_gateway.metrics import GatewayMetrics
from gpuscale_gateway.registry import Registry
from inference_app.metrics import PodMetrics
from inference_app.slots import Load
from tests.chart.helm import CHART, one, render

DASHBOARD = CHART / "dashboards" / "gpuscale.json"
METRIC = re.compile(r"\b((?:gpuscale|kube)_[a-zA-Z0-9_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def series_names(registry: CollectorRegistry) -> set[str]:
    """The names of every series the registry exposes, from its families (a labelled counter that has
    counted nothing yet still counts)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def exposed() -> set[str]:
    pod = PodMetrics(
        lambda: Load(queued=0, running=0, slots=1, busy_seconds=0.0), lambda: True, lambda: False
    )
    replicas = Registry()
    gateway = GatewayMetrics(replicas, Dispatcher(replicas, max_queue=1, queue_timeout=1.0))
    names = series_names(pod.registry) | series_names(gateway.registry)
    return names | series_names(prometheus_client.REGISTRY)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def unknown_metrics(exprs: Iterable[str], known: set[str]) -> list[str]:
    return sorted({name for expr in exprs for name in METRIC.findall(expr)} - known)


def test_every_metric_in_the_dashboard_is_one_the_code_exposes() -> None:
    known = exposed()
    # The registries were read: each part's own metrics are among them.
    assert {
        "gpuscale_queue_depth",
        "gpuscale_gateway_requests_total",
        "gpuscale_operator_tick_seconds_bucket",
    } <= known
    exprs = queries(dashboard())
    assert len(exprs) >= 15
    assert unknown_metrics(exprs, known) == []


def test_the_metric_check_catches_a_wrong_name() -> None:
    known = exposed()
    wrong = [
        "sum(gpuscale_queue_length)",  # never existed
        "rate(gpuscale_gateway_requests[5m])",  # a counter without its _total
        "gpuscale_request_duration_seconds",  # a histogram has no bare series
    ]
    assert unknown_metrics(wrong, known) == [
        "gpuscale_gateway_requests",
        "gpuscale_queue_length",
        "gpuscale_request_duration_seconds",
    ]


def test_the_dashboard_shows_load_replicas_latency_and_decisions() -> None:
    exprs = " ".join(queries(dashboard()))
    for needed in (
        "gpuscale_queue_depth",  # queue depth
        "gpuscale_inflight_requests",  # running
        "gpuscale_operator_desired_replicas",  # replicas desired
        "gpuscale_operator_ready_replicas",  # replicas ready
        "gpuscale_gateway_request_duration_seconds_bucket",  # latency, as clients see it
        "gpuscale_request_duration_seconds_bucket",  # latency in the model pods
        "gpuscale_operator_scale_decisions_total",  # scale decisions
    ):
        assert needed in exprs, needed
    for quantile in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le, gis) (rate(gpuscale_gateway_request_duration"
            in exprs
        )


def test_the_dashboard_groups_by_the_labels_the_pod_monitors_set() -> None:
    """`gis` and `component` exist only through the PodMonitors' relabelling: they must set both."""
    targets = {
        r["targetLabel"]
        for monitor in render("everything")
        if monitor["kind"] == "PodMonitor"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]
        for r in endpoint["relabelings"]
    }
    exprs = " ".join(queries(dashboard()))
    used = set(re.findall(r"\b(gis|component)\b", exprs))
    assert used == {"gis", "component"}
    assert used <= targets


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "gpuscale"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"} <= variables
    # Panels tile the 24-column grid without overlapping.
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


@pytest.mark.parametrize("enabled", [True, False])
def test_the_chart_ships_the_dashboard_for_grafanas_sidecar(enabled: bool) -> None:
    objs = render("everything" if enabled else "defaults")
    maps = [o for o in objs if o["kind"] == "ConfigMap"]
    if not enabled:
        assert maps == []
        return
    config_map = one(maps, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {"gpuscale.json": DASHBOARD.read_text()}
