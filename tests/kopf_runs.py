"""kopf in this process against the API test server, as `kopf run` runs an operator against a cluster:
the kopf tests' small operator and the operator's own handlers both run this way."""

from __future__ import annotations

import sys
from pathlib import Path

import kopf
import pytest
from kopf.testing import KopfRunner


def kopf_env(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path) -> None:
    """KUBECONFIG points at the server before kopf starts, as on a cluster."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # `kopf run FILE` puts the file's folder on sys.path; a copy keeps that from outliving the test.
    monkeypatch.setattr(sys, "path", list(sys.path))


def kopf_runner(handlers: str | Path, *args: str, timeout: float) -> KopfRunner:
    """`kopf run --standalone ARGS HANDLERS` into a fresh registry: kopf re-executes the handlers file into
    it and `kopf run` makes it the process-wide default, so no handler registered by an earlier test's run
    (or by another test's operator) lingers or mixes in."""
    return KopfRunner(
        ["run", "--standalone", *args, str(handlers)], registry=kopf.OperatorRegistry(), timeout=timeout
    )
