"""The `GpuInferenceService` resource as typed data: parsed from the YAML a user would `kubectl apply`,
with every default and bound in one place. The local backend reads it now; the operator and the CRD
schema follow the same fields."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "gpuscale.io"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "GpuInferenceService"
PLURAL = "gpuinferenceservices"
# A DNS-1123 label: the name becomes part of pod and Service names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


def _number(x: float) -> str:
    """Short where that is exact (90, 0.5), every digit where it is not (0.5000001)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


class AutoscalingSpec(_Spec):
    """How many replicas, from queue depth. Every knob has a default; see docs/autoscaling.md."""

    enabled: bool = Field(True, description="scale by load; when false, `spec.replicas` replicas run")
    min_replicas: int = Field(1, ge=0, le=1000, description="fewest replicas; 0 allows scale to zero")
    max_replicas: int = Field(8, ge=1, le=1000, description="most replicas")
    target_per_replica: float = Field(
        1.0, gt=0, le=1000, description="outstanding requests (queued + running) per replica to aim for"
    )
    tick_seconds: float = Field(1.0, ge=0.1, le=60, description="how often the loop observes and decides")
    burst_window_seconds: float = Field(
        6.0, gt=0, le=3600, description="averaging window that lets the load raise the replica count"
    )
    stable_window_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="window that holds replicas up after load falls: its load is the higher of the mean "
        "and the 90th percentile of its ticks",
    )
    scale_down_delay_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="a lower count must be wanted this long (and this long after a "
        "scale-up) before replicas are removed",
    )
    max_scale_down_rate: float = Field(
        2.0, ge=1.0, le=1000, description="at most divide the replicas by this per decision"
    )
    scale_to_zero_after_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="with minReplicas 0: no request for this long before the last replica goes",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}")
        if self.burst_window_seconds > self.stable_window_seconds:
            raise ValueError(
                f"burstWindowSeconds {_number(self.burst_window_seconds)} is longer than "
                f"stableWindowSeconds {_number(self.stable_window_seconds)}"
            )
        return self


class GatewaySpec(_Spec):
    enabled: bool = Field(True, description="run the gateway: one queue in front of the replicas")
    max_queue: int = Field(1000, ge=0, le=1_000_000, description="requests that may wait; more get 429")
    queue_timeout_seconds: float = Field(
        900.0, gt=0, le=86400, description="a request waiting longer gets 503"
    )
    prefetch: int = Field(0, ge=0, le=1, description="extra request a busy replica may hold (hides the hop)")


class MetricsSpec(_Spec):
    """The gauges read for load, so servers other than ours (vLLM, TGI, Triton) can be scaled too."""

    queue_depth: str = Field("gpuscale_queue_depth", min_length=1, description="requests waiting")
    in_flight: str = Field("gpuscale_inflight_requests", min_length=1, description="requests running")


class EnvVar(_Spec):
    """One environment variable of the model container."""

    name: str = Field(
        min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="the variable's name"
    )
    value: str = Field("", description="its value")


class TemplateSpec(_Spec):
    """Pod template overrides. `env` reaches the pod server (locally too); the rest is for Kubernetes."""

    model_config = ConfigDict(extra="allow")
    env: tuple[EnvVar, ...] = ()


class ServiceSpec(_Spec):
    image: str = Field(min_length=1, description="a server that exposes the load gauges")
    port: int = Field(8000, ge=1, le=65535, description="the port the model server listens on in its pod")
    gpus_per_replica: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per pod; 0 for CPU only")
    slots_per_replica: int = Field(1, ge=1, le=64, description="requests on the GPU at once per pod")
    max_request_seconds: float = Field(900.0, gt=0, le=86400, description="longest request; drives the drain")
    replicas: int = Field(1, ge=0, le=1000, description="replicas when autoscaling is off")
    template: TemplateSpec = TemplateSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    gateway: GatewaySpec = Field(GatewaySpec(), description="the queue in front of the replicas")
    metrics: MetricsSpec = MetricsSpec()


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1, max_length=52, pattern=NAME_PATTERN)
    namespace: str = "default"


class GpuInferenceService(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    api_version: Literal["gpuscale.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["GpuInferenceService"]
    metadata: Metadata
    spec: ServiceSpec
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


class ManifestError(ValueError):
    """A manifest that cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def describe(exc: ValidationError) -> list[str]:
    """One line per problem, located by the YAML path a user edits (`spec.autoscaling.maxReplicas`)."""
    lines = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        where = _where(error["loc"])
        if error["type"] == "string_pattern_mismatch" and where == "metadata.name":
            message = "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        lines.append(f"{where}: {message}" if where else message)
    return lines


def parse_service(document: Any, source: str = "manifest") -> GpuInferenceService:
    if not isinstance(document, dict):
        raise ManifestError(source, [f"expected a {KIND} object, got {type(document).__name__}"])
    try:
        return GpuInferenceService.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(source, describe(exc)) from None


def load_service(path: str | Path) -> GpuInferenceService:
    """The one GpuInferenceService in a YAML file (other kinds in the same file are skipped)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ManifestError(source, [f"cannot read: {exc.strerror}"]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(source, [f"{where}not valid YAML: {problem}"]) from None
    services = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(services) > 1:
        raise ManifestError(source, [f"holds {len(services)} {KIND} objects; give one per file"])
    if not services:
        kinds = ", ".join(str(d.get("kind")) for d in documents if isinstance(d, dict)) or "nothing"
        raise ManifestError(source, [f"no {KIND} in it (found {kinds})"])
    return parse_service(services[0], source)


def replicas_for(gpus: int, gpus_per_replica: int) -> int | None:
    """How many replicas the GPUs of a machine hold, or None when GPUs set no bound."""
    if gpus_per_replica == 0 or gpus == 0:
        return None
    return math.floor(gpus / gpus_per_replica)
