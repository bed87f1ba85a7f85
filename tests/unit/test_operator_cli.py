"""`gpuscale operator`: a scope is required (exit 2), and the operator's metrics are served by name."""

from __future__ import annotations

import httpx
import pytest
from gpuscale.cli import main
from gpuscale.kube import metrics

from tests.conftest import free_port


def test_the_operator_needs_a_scope(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator"]) == 2
    assert "say which namespaces to watch: -n NS (repeatable) or -A" in capsys.readouterr().err


def test_namespace_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["operator", "-n", "ml", "-A"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_metrics_are_served_with_the_operator_names() -> None:
    port = free_port("127.0.0.1")
    metrics.DECISIONS.labels("up").inc()
    metrics.serve(port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in (
        "gpuscale_operator_scale_decisions_total",
        "gpuscale_operator_tick_errors_total",
        "gpuscale_operator_reconciles_total",
        "gpuscale_operator_reconcile_seconds_bucket",
        "gpuscale_operator_tick_seconds_bucket",
    ):
        assert name in text
    assert 'gpuscale_operator_scale_decisions_total{direction="up"}' in text
