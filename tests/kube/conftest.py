"""Fixtures for the Kubernetes API test server: the server, a kubeconfig, the official client, a test CRD."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from kube_test_server.server import KubeTestServer

WIDGETS_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["all"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                # Field selectors may name spec.color (Kubernetes 1.30+, beta; GA in 1.32).
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "additionalPrinterColumns": [
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["color"],
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minSize <= self.maxSize",
                                        "message": "minSize must not exceed maxSize",
                                    }
                                ],
                                "properties": {
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "replicas": {
                                        "type": "integer",
                                        "minimum": 0,
                                        "maximum": 10,
                                        "default": 1,
                                    },
                                    "minSize": {"type": "integer", "default": 1},
                                    "maxSize": {"type": "integer", "default": 4},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer"},
                                    "selector": {"type": "string"},
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def kube(kube_server: KubeTestServer) -> KubeTestServer:
    """The API alone, no controllers: what each API behaviour test needs."""
    return kube_server


@pytest.fixture
def kube_http(kube: KubeTestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube.url, timeout=10) as http:
        yield http


@pytest.fixture
def api(kube: KubeTestServer) -> Iterator[client.ApiClient]:
    """The official client, configured as from a kubeconfig (here, straight from the URL)."""
    configuration = client.Configuration()
    configuration.host = kube.url
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def widgets(kube: KubeTestServer) -> dict[str, Any]:
    """The test CRD, created through the API as `kubectl apply -f crd.yaml` would."""
    return kube.apply(WIDGETS_CRD)[0]


@pytest.fixture
def kubeconfig(kube: KubeTestServer, tmp_path: Path) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig.yaml")


def deployment(container: dict[str, Any], name: str = "web", replicas: int = 1) -> dict[str, Any]:
    """A Deployment of one container (a copy of it), its pods labelled app=NAME."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [copy.deepcopy(container)]}},
        },
    }


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"color": "red", **spec},
    }


def status_of(error: client.ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert isinstance(body, dict)
    return body
