"""``python -m kube_test_server``: a kubeconfig that kubectl, kopf and the client can use by hand."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kubernetes import client, config

from kube_test_server.server import KubeTestServer
from tests.conftest import wait_until


def test_the_command_serves_a_cluster_behind_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "kube_test_server", "--kubeconfig", str(kubeconfig), "--gpus", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving the Kubernetes API on http://127.0.0.1:")
        assert "export KUBECONFIG=" in process.stdout.readline()
        api = config.new_client_from_config(config_file=str(kubeconfig))
        nodes = client.CoreV1Api(api).list_node().items
        assert [(n.metadata.name, n.status.allocatable["nvidia.com/gpu"]) for n in nodes] == [("node-1", "2")]
        if shutil.which("kubectl"):
            shown = subprocess.run(
                ["kubectl", "--kubeconfig", str(kubeconfig), "get", "namespaces", "-o", "json"],
                capture_output=True,
                text=True,
                check=True,
            )
            names = {i["metadata"]["name"] for i in json.loads(shown.stdout)["items"]}
            assert {"default", "kube-system"} <= names
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_a_bad_file_to_apply_is_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Nonsense\nmetadata: {name: x}\n")
    done = subprocess.run(
        [sys.executable, "-m", "kube_test_server", "--kubeconfig", str(tmp_path / "kc"), "--apply", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "no served kind Nonsense in v1" in done.stderr


def test_the_cluster_fixture_runs_a_deployment_onto_a_gpu_node(
    kube_cluster: Callable[..., KubeTestServer],
) -> None:
    server = kube_cluster(gpus=1)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gpu", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "gpu"}},
            "template": {
                "metadata": {"labels": {"app": "gpu"}},
                "spec": {
                    "containers": [
                        {"name": "m", "image": "m:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                    ]
                },
            },
        },
    }
    server.apply(deployment)

    def phases() -> list[str]:
        pods = server.call(lambda s: s.list_objects(s.type("", "v1", "pods"), "default"))
        return sorted(p["status"].get("phase", "") for p in pods)

    # One GPU on the one node: one pod runs, the other waits, unschedulable, as on a cluster.
    wait_until(lambda: phases() == ["Pending", "Running"], timeout=10)
    pending = server.call(
        lambda s: [
            p
            for p in s.list_objects(s.type("", "v1", "pods"), "default")
            if p["status"]["phase"] == "Pending"
        ]
    )
    scheduled = {c["type"]: c for c in pending[0]["status"]["conditions"]}["PodScheduled"]
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
