"""Reading GpuInferenceService manifests: defaults, one clear line per problem."""
# ruff: noqa: E501  (table rows read best one per line)

from __future__ import annotations

from pathlib import Path

import pytest
from gpuscale.control.service import local_autoscaling
from gpuscale.spec import GpuInferenceService, ManifestError, load_service, parse_service

ROOT = Path(__file__).resolve().parents[2]


def manifest(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "metadata": {"name": "sdxl"},
        "spec": {"image": "registry.example.com/sdxl:1.4", **spec},
    }


def test_defaults_fill_a_minimal_manifest() -> None:
    service = parse_service(manifest())
    spec = service.spec
    assert (spec.port, spec.gpus_per_replica, spec.slots_per_replica) == (8000, 1, 1)
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 8)
    assert spec.autoscaling.target_per_replica == 1.0
    assert (spec.gateway.max_queue, spec.gateway.queue_timeout_seconds) == (1000, 900)
    assert spec.metrics.queue_depth == "gpuscale_queue_depth"
    assert service.metadata.namespace == "default"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    assert isinstance(load_service(path), GpuInferenceService)


@pytest.mark.parametrize(
    ("spec", "problems"),
    [
        ({"port": 0}, ["spec.port: Input should be greater than or equal to 1"]),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, ["spec.autoscaling: minReplicas 5 is above maxReplicas 2"]),
        ({"autoscaling": {"maxReplica": 2}}, ["spec.autoscaling.maxReplica: Extra inputs are not permitted"]),
        ({"gateway": {"prefetch": 2}, "slotsPerReplica": 0}, [
            "spec.slotsPerReplica: Input should be greater than or equal to 1",
            "spec.gateway.prefetch: Input should be less than or equal to 1",
        ]),
        ({"template": {"env": [{"value": "x"}]}}, ["spec.template.env[0].name: Field required"]),
        ({"autoscaling": {"burstWindowSeconds": 90}}, ["burstWindowSeconds 90 is longer than stableWindowSeconds 60"]),
    ],
)  # fmt: skip
def test_each_problem_gets_its_own_line(spec: dict[str, object], problems: list[str]) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_service(manifest(**spec), "svc.yaml")
    assert len(caught.value.problems) == len(problems)
    for line, expected in zip(caught.value.problems, problems, strict=True):
        assert expected in line
    assert str(caught.value).splitlines()[0].startswith("svc.yaml: ")


def test_missing_image_and_bad_name() -> None:
    document = manifest()
    document["metadata"] = {"name": "Big_Name"}
    document["spec"] = {}
    with pytest.raises(ManifestError) as caught:
        parse_service(document)
    assert caught.value.problems == [
        "metadata.name: must be lowercase letters, digits and '-', starting and ending with a letter or digit",
        "spec.image: Field required",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: [1,\n", "line 2: not valid YAML"),
        ("kind: Deployment\n", "no GpuInferenceService in it (found Deployment)"),
        ("kind: GpuInferenceService\n---\nkind: GpuInferenceService\n", "holds 2 GpuInferenceService objects"),
        ("apiVersion: gpuscale.io/v2\nkind: GpuInferenceService\nmetadata: {name: a}\nspec: {image: x}\n",
         "apiVersion: Input should be 'gpuscale.io/v1alpha1'"),
    ],
)  # fmt: skip
def test_file_problems(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_service(path)
    assert problem in caught.value.problems[0]


def test_a_missing_file() -> None:
    with pytest.raises(ManifestError, match="cannot read: No such file or directory"):
        load_service("/nonexistent/svc.yaml")


@pytest.mark.parametrize(
    ("gpus_per_replica", "gpus", "max_replicas", "note"),
    [
        (1, 0, 8, "no GPU found"),
        (1, 4, 4, "maxReplicas 8 capped to 4"),
        (2, 4, 2, "capped to 2"),
        (1, 16, 8, None),
        (0, 4, 8, None),
    ],
)
def test_max_replicas_capped_by_the_gpus_here(
    gpus_per_replica: int, gpus: int, max_replicas: int, note: str | None
) -> None:
    service = parse_service(manifest(gpusPerReplica=gpus_per_replica))
    autoscaling, said = local_autoscaling(service, gpus)
    assert autoscaling.max_replicas == max_replicas
    assert (note in said) if note and said else said is note


def test_too_few_gpus_for_one_replica() -> None:
    with pytest.raises(ValueError, match="each replica needs 4 GPUs and this machine has 2"):
        local_autoscaling(parse_service(manifest(gpusPerReplica=4)), 2)
