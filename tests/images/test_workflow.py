"""The CI workflow, the kind cluster's config and `make e2e`, read as data: CI runs `make test`, and the
e2e tests on kind over several Kubernetes versions, with the tools the tests expect."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import cluster

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yaml"
MAKEFILE = ROOT / "Makefile"
NODE_IMAGE = re.compile(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}")


def workflow() -> dict[Any, Any]:
    doc: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return doc


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def runs(job: str) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(job))


def uses(job: str) -> dict[str, dict[str, Any]]:
    """The actions a job uses, by name without the version, with their inputs."""
    return {step["uses"].split("@")[0]: step.get("with", {}) for step in steps(job) if "uses" in step}


def make_targets() -> set[str]:
    """The Makefile's targets, with $(VENV) and $(BIN) spelled out as a command line names them."""
    text = MAKEFILE.read_text()
    names = set()
    for match in re.finditer(r"^([^\s:#=][^:=]*):(?!=)", text, re.MULTILINE):
        for target in match[1].split():
            names.add(target.replace("$(BIN)", ".venv/bin").replace("$(VENV)", ".venv"))
    return names


def test_workflow_triggers_on_pushes_and_pull_requests() -> None:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    doc = workflow()
    triggers: dict[str, Any] = doc["on"] if "on" in doc else doc[True]
    assert {"push", "pull_request"} <= set(triggers)


def test_jobs_lint_test_chart_and_e2e() -> None:
    assert {"lint", "test", "chart", "e2e"} <= set(workflow()["jobs"])
    assert re.search(r"^make test$", runs("test"), re.MULTILINE)
    assert "make lint" in runs("lint")  # ruff, ruff format, lint-imports
    assert "make typecheck" in runs("lint")  # mypy --strict
    assert "helm lint" in runs("chart")
    assert "tests/chart" in runs("chart")


def test_every_make_target_the_workflow_runs_exists() -> None:
    targets = make_targets()
    for job in workflow()["jobs"]:
        for line in runs(job).splitlines():
            for command in line.split("&&"):
                words = command.split()
                if words[:1] == ["make"]:
                    for target in words[1:]:
                        assert target in targets, f"{job}: make {target}: no such target"


def test_make_e2e_runs_the_e2e_marker() -> None:
    recipe = re.search(r"^e2e:.*\n((?:\t.*\n)+)", MAKEFILE.read_text(), re.MULTILINE)
    assert recipe, "the Makefile has no e2e target"
    assert re.search(r"pytest -m e2e tests/e2e", recipe[1])
    assert re.search(r"^\.PHONY:.*\be2e\b", MAKEFILE.read_text(), re.MULTILINE)


def test_e2e_runs_on_kind_over_three_kubernetes_versions() -> None:
    job = workflow()["jobs"]["e2e"]
    matrix = job["strategy"]["matrix"]["include"]
    images = [entry["node_image"] for entry in matrix]
    minors = set()
    for image in images:
        found = NODE_IMAGE.fullmatch(image)
        assert found, f"{image}: a kindest/node image pinned by tag and digest"
        minors.add(int(found[1]))
    assert len(minors) >= 3, images
    assert job["strategy"]["fail-fast"] is False  # one version failing must not hide the others
    step = next(s for s in job["steps"] if "make e2e" in str(s.get("run", "")))
    assert step["env"]["KIND_NODE_IMAGE"] == "${{ matrix.node_image }}"
    # In CI a missing tool fails the job: a skipped e2e suite must not pass as green.
    assert step["env"]["E2E_REQUIRED"] == "1"


def test_e2e_job_installs_kind_helm_and_kubectl() -> None:
    actions = uses("e2e")
    kind = actions["helm/kind-action"]
    # The tests create the cluster themselves (name, config, node image), so the action only installs.
    assert kind["install_only"] is True
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind["version"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind["kubectl_version"])
    assert re.fullmatch(r"v3\.\d+\.\d+", actions["azure/setup-helm"]["version"])


def test_actions_are_pinned_to_a_version() -> None:
    for job in workflow()["jobs"]:
        for step in steps(job):
            if "uses" in step:
                _, _, ref = step["uses"].partition("@")
                assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", ref), f"{job}: {step['uses']}"


def test_kind_config_has_a_control_plane_and_two_gpu_workers() -> None:
    config = yaml.safe_load(cluster.KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "gpuscale-e2e"  # the tests' cluster name unless KIND_CLUSTER_NAME says otherwise
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    key, value = cluster.GPU_NODE_LABEL
    for node in config["nodes"]:
        labelled = node.get("labels", {}).get(key) == value
        assert labelled == (node["role"] == "worker"), node
    # The label the GPU example selects, so it would land on these nodes too.
    gpu_example = yaml.safe_load((ROOT / "examples" / "gpu.yaml").read_text())
    assert gpu_example["spec"]["template"]["nodeSelector"] == {key: value}


def test_e2e_is_skipped_here_with_one_line_why() -> None:
    """Where a tool is missing (no Docker engine here), the reason names it, on one line."""
    reason = cluster.missing_tools()
    if reason is None:
        return  # a machine that can run them
    assert "\n" not in reason
    assert reason.startswith("kind e2e needs kind, docker (a running engine), kubectl and helm: ")
