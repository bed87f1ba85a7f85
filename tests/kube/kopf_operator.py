"""A minimal kopf operator for the test CRD (Widget, example.com/v1): loaded by `kopf run` in test_kopf.py.

Everything it does leaves a trace on the API that a test can read back: the create handler and the timer
write status fields the CRD's schema declares (the server prunes undeclared ones, as kube-apiserver does),
and the delete handler creates a ConfigMap.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
from kubernetes import client, config

WIDGETS = ("example.com", "v1", "widgets")
TICK_INTERVAL = 0.5


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True
    # kopf posts Events only for explicit kopf.info()/kopf.event() calls unless `loggers` is on; the
    # create handler makes one such call, and the timer's log lines stay off the API.
    settings.posting.enabled = True
    settings.posting.default_backoffs = (0.1, 0.2, 0.5)
    # A 1 s server-side timeout makes kopf end and resume its watches (from the last resourceVersion)
    # within a short test, as it does every few minutes on a cluster; short backoffs keep a test's
    # injected 500 from costing the default 1 s before the retry.
    settings.watching.server_timeout = 1
    settings.watching.client_timeout = 5
    settings.networking.error_backoffs = (0.1, 0.2, 0.5, 1.0)
    settings.networking.request_timeout = 10


@kopf.on.create(*WIDGETS)
def created(name: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    kopf.info(body, reason="Created", message=f"widget {name} is ready")
    patch.status["selector"] = f"widget={name}"
    patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Created"}]


@kopf.timer(*WIDGETS, interval=TICK_INTERVAL)
def tick(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    patch.status["replicas"] = int(status.get("replicas") or 0) + 1


@kopf.on.delete(*WIDGETS)
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    # The official client, not kopf's API: the path operator code takes, from the same kubeconfig.
    with config.new_client_from_config(config_file=os.environ["KUBECONFIG"]) as api:
        client.CoreV1Api(api).create_namespaced_config_map(
            namespace or "default",
            {"metadata": {"name": f"deleted-{name}"}, "data": {"widget": name}},
        )
