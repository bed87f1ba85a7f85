"""What the kind e2e tests drive: the command-line tools (kind, docker, kubectl, helm), the cluster's
names, and the steps that build one (images, fake GPUs, the chart).

Nothing here runs at import: `missing_tools` is what decides, at collection, whether the tests run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
KIND_CONFIG = REPO / "kind-config.yaml"
CHART = REPO / "charts" / "gpuscale"
CRD_FILE = REPO / "crds" / "gpuinferenceservices.gpuscale.io.yaml"
CRD_NAME = "gpuinferenceservices.gpuscale.io"

CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "gpuscale-e2e")
# The CI matrix picks the Kubernetes version by node image; unset, kind's own default.
NODE_IMAGE = os.environ.get("KIND_NODE_IMAGE", "")
KEEP_CLUSTER = os.environ.get("KEEP_CLUSTER") == "1"
# Where `kind export logs` writes when a test failed (CI sets it, and uploads the folder).
LOGS_DIR = Path(os.environ.get("E2E_LOGS_DIR") or Path(tempfile.gettempdir()) / "gpuscale-e2e-logs")

TAG = "e2e"
OPERATOR_IMAGE = f"gpuscale-operator:{TAG}"
INFERENCE_IMAGE = f"gpuscale-inference:{TAG}"
DOCKERFILES = {OPERATOR_IMAGE: "operator/Dockerfile", INFERENCE_IMAGE: "inference_app/Dockerfile"}

RELEASE = "gpuscale"
OPERATOR_NAMESPACE = "gpuscale-system"
NAMESPACE = "gpuscale-e2e"

# The label kind-config.yaml puts on the workers: what NVIDIA's GPU feature discovery sets on GPU nodes,
# and what examples/gpu.yaml selects.
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_RESOURCE = "nvidia.com/gpu"
FAKE_GPUS_PER_NODE = 4

TOOLS = ("kind", "docker", "kubectl", "helm")

T = TypeVar("T")


def tool(name: str) -> str | None:
    """The tool on PATH, or the one `make test` puts beside the interpreter (helm and kubectl)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def missing_tools() -> str | None:
    """None when the e2e tests can run here; otherwise one line saying what is missing."""
    problems = []
    missing = [name for name in TOOLS if tool(name) is None]
    if missing:
        problems.append(f"{', '.join(missing)} not found")
    docker = tool("docker")
    if docker is not None:
        try:
            info = subprocess.run(
                [docker, "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            problems.append("`docker info` timed out")
        else:
            if info.returncode != 0:
                said = (info.stderr or info.stdout).strip().splitlines()
                problems.append(f"`docker info` failed ({said[-1] if said else f'exit {info.returncode}'})")
    if not problems:
        return None
    return f"kind e2e needs kind, docker (a running engine), kubectl and helm: {'; '.join(problems)}"


class CommandFailed(AssertionError):
    """A tool exited non-zero; the message holds the command and the end of what it said."""


def run(
    *args: str,
    stdin: str | None = None,
    timeout: float = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one tool from the repository root; output captured, and quoted in the failure."""
    program = tool(args[0]) or args[0]
    proc = subprocess.run(
        [program, *args[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise CommandFailed(f"`{shlex.join(args)}` exited {proc.returncode}:\n{said}")
    return proc


def poll(what: str, check: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """`check()` until it returns something other than None (or False); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


@dataclass(frozen=True)
class Kube:
    """kubectl and helm against the kind cluster, through a kubeconfig of the tests' own (the user's
    ~/.kube/config is never touched)."""

    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        return run("kubectl", *args, stdin=stdin, timeout=timeout, check=check, env=self.env).stdout

    def helm(self, *args: str, timeout: float = 600) -> str:
        return run("helm", *args, timeout=timeout, env=self.env).stdout

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def exists(self, *args: str) -> bool:
        proc = run("kubectl", "get", *args, "-o", "name", check=False, env=self.env)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def names(self, *args: str) -> list[str]:
        return self.kubectl("get", *args, "-o", "name").split()


# Building the cluster


def cluster_exists() -> bool:
    return CLUSTER in run("kind", "get", "clusters").stdout.split()


def create_cluster(kubeconfig: Path) -> bool:
    """Create the cluster, or reuse one of the same name (KEEP_CLUSTER=1 left it); True if created."""
    if cluster_exists():
        run("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(kubeconfig))
        return False
    image = ["--image", NODE_IMAGE] if NODE_IMAGE else []
    run(
        "kind",
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--config",
        str(KIND_CONFIG),
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "180s",
        *image,
        timeout=600,
    )
    return True


def build_and_load_images() -> None:
    """Both images from the repository root, as the Dockerfiles say, then into every kind node (the
    pods use imagePullPolicy Never or IfNotPresent with a tag no registry has)."""
    for image, dockerfile in DOCKERFILES.items():
        run("docker", "build", "-f", dockerfile, "-t", image, ".", timeout=1800)
    run("kind", "load", "docker-image", *DOCKERFILES, "--name", CLUSTER, timeout=600)


def gpu_nodes(kube: Kube) -> list[str]:
    key, value = GPU_NODE_LABEL
    return kube.names("nodes", "-l", f"{key}={value}")


def fake_gpus(kube: Kube) -> list[str]:
    """Give each GPU-labelled worker FAKE_GPUS_PER_NODE nvidia.com/gpu, as the device plugin would
    advertise them: pods asking for GPUs then schedule, and only there. The kubelet keeps an extended
    resource it does not manage (the documented way to advertise one), and derives allocatable from
    capacity; both are set here so the scheduler need not wait for its next status update."""
    nodes = gpu_nodes(kube)
    path = GPU_RESOURCE.replace("/", "~1")
    patch = json.dumps(
        [
            {"op": "add", "path": f"/status/capacity/{path}", "value": str(FAKE_GPUS_PER_NODE)},
            {"op": "add", "path": f"/status/allocatable/{path}", "value": str(FAKE_GPUS_PER_NODE)},
        ]
    )
    for node in nodes:
        kube.kubectl("patch", node, "--subresource=status", "--type=json", "-p", patch)

    def advertised() -> bool:
        return all(
            kube.get(node)["status"].get("allocatable", {}).get(GPU_RESOURCE) == str(FAKE_GPUS_PER_NODE)
            for node in nodes
        )

    poll("the GPU nodes advertising nvidia.com/gpu", advertised, timeout=60)
    return nodes


def install_chart(kube: Kube) -> None:
    """The chart as a user installs it, with the images just loaded. The gateway image is left to its
    default, the operator's image: the tests check that the gateway pods run it."""
    kube.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        "image.repository=gpuscale-operator",
        "--set",
        f"image.tag={TAG}",
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "5m",
    )
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def export_logs() -> Path:
    """Everything kind knows (pod logs, kubelet and containerd journals), plus the objects and events."""
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    run("kind", "export", "logs", str(LOGS_DIR), "--name", CLUSTER, timeout=300, check=False)
    return LOGS_DIR


def describe_everything(kube: Kube) -> str:
    parts = []
    for args in (
        ("get", "nodes,all,gis", "-A", "-o", "wide"),
        ("describe", "gis", "-A"),
        ("get", "events", "-A", "--sort-by=.lastTimestamp"),
    ):
        proc = run("kubectl", *args, check=False, env=kube.env, timeout=60)
        parts.append(f"$ kubectl {shlex.join(args)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def delete_cluster(kubeconfig: Path) -> None:
    # Our kubeconfig, so that kind does not go looking for the cluster's entry in the user's.
    run(
        "kind",
        "delete",
        "cluster",
        "--name",
        CLUSTER,
        "--kubeconfig",
        str(kubeconfig),
        timeout=300,
        check=False,
    )


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """A `kubectl get` table: the header's column names and each row's cells. Cells hold no spaces
    (names, counts, True/False, ages), so splitting on whitespace is exact."""
    lines = [line.split() for line in text.strip().splitlines()]
    return (lines[0], lines[1:]) if lines else ([], [])
