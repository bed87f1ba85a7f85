"""The gateway's settings: one class, read from `GPUSCALE_GATEWAY_*` variables and CLI flags."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference_app.settings import LogLevel

ENV_PREFIX = "GPUSCALE_GATEWAY_"
REPLICA_NAME = r"^[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]*$"  # bracketed for IPv6 host:port names


class ReplicaSpec(BaseModel):
    """A replica as discovery or the admin API names it."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=REPLICA_NAME, max_length=253, description="unique name of the replica")
    url: str = Field(description="http://host:port of the replica's server")
    slots: int | None = Field(None, ge=1, le=1024, description="requests it runs at once")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_url(url)


def check_url(url: str) -> str:
    """`http://host:port` with nothing after it: the client's path is appended as it came."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {url!r} ({exc})") from None
    if parts.scheme != "http" or not parts.hostname or not parts.hostname.isascii():
        raise ValueError(f"expected http://host:port, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected http://host:port with no path, query or user, got {url!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"http://{host}:{port or 80}"


def parse_replicas(text: str) -> list[ReplicaSpec]:
    """`NAME=URL` or bare `URL` items, comma-separated; a bare URL is named after its host:port."""
    specs: list[ReplicaSpec] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep:
            url = check_url(item)
            name = url.removeprefix("http://")
        try:
            specs.append(ReplicaSpec(name=name.strip(), url=url.strip()))
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ValueError(f"replica {item!r}: {reasons}") from None
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"replica names must be unique, got {', '.join(names)}")
    return specs


class GatewaySettings(BaseSettings):
    """Every field is a `gpuscale gateway --kebab-name` flag and a `GPUSCALE_GATEWAY_UPPER_NAME` variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    host: str = Field("127.0.0.1", description="address the clients' port listens on (0.0.0.0 in a pod)")
    port: int = Field(8080, ge=0, le=65535, description="clients' port; 0 lets the OS pick one")
    admin_host: str = Field("127.0.0.1", description="address of the admin port (metrics, replicas API)")
    admin_port: int = Field(8081, ge=0, le=65535, description="admin port; 0 lets the OS pick one")
    max_queue: int = Field(
        1000, ge=0, le=10_000_000, description="requests that may wait in the gateway; more get 429"
    )
    queue_timeout_seconds: float = Field(
        900.0, gt=0, description="longest wait for a free replica before a 503"
    )
    prefetch: int = Field(
        0,
        ge=0,
        le=1,
        description="extra requests a replica may hold beyond its slots, to hide the round trip",
    )
    slots: int = Field(1, ge=1, le=1024, description="slots of a replica registered without a count")
    replicas: str = Field(
        "",
        description="static replicas, comma-separated NAME=URL or bare URL (named after its host:port)",
    )
    connect_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="time to open a connection to a replica before it is marked down"
    )
    drain_seconds: float = Field(
        900.0, gt=0, description="on SIGTERM, how long queued and running requests may take to finish"
    )
    buffer_bytes: int = Field(
        1 << 20,
        ge=0,
        le=1 << 30,
        description="request bodies up to this size are read before queueing (safe to retry); "
        "larger ones stream to the replica",
    )
    queued_methods: str = Field(
        "POST",
        description="comma-separated methods that take a slot; others go at once to the least-loaded replica",
    )
    health_path: str = Field(
        "/v2/health/ready", pattern=r"^/", description="path probed on replicas marked down"
    )
    discovery: Literal["static", "kubernetes"] = Field(
        "static",
        description="where replicas come from besides --replicas and the admin API: nowhere else (static), "
        "or the ready pods matching --kube-selector in --kube-namespace (kubernetes)",
    )
    kube_namespace: str = Field(
        "",
        pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$",
        description="kubernetes discovery: namespace of the pods (required)",
    )
    kube_selector: str = Field(
        "", description="kubernetes discovery: label selector of the pods, e.g. app=sleep (required)"
    )
    kube_port: int = Field(
        0, ge=0, le=65535, description="kubernetes discovery: the pods' port to send to (required)"
    )
    kubeconfig: str = Field(
        "",
        description="kubernetes discovery: kubeconfig file (default: $KUBECONFIG, else the pod's service "
        "account)",
    )
    log_level: LogLevel = Field("info", description="gateway log level")

    @field_validator("replicas")
    @classmethod
    def _check_replicas(cls, text: str) -> str:
        parse_replicas(text)
        return text

    @field_validator("queued_methods")
    @classmethod
    def _check_methods(cls, text: str) -> str:
        methods = [m.strip().upper() for m in text.split(",") if m.strip()]
        for method in methods:
            if not method.isalpha() or not method.isascii():
                raise ValueError(f"not an HTTP method: {method!r}")
        return ",".join(methods)

    @field_validator("admin_port")
    @classmethod
    def _distinct_ports(cls, admin_port: int, info: ValidationInfo) -> int:
        # The one server tells the two apart by the port a connection came in on.
        port = info.data.get("port")
        if admin_port and admin_port == port:
            raise ValueError(f"must differ from the clients' port (both {port})")
        return admin_port

    @property
    def static_replicas(self) -> list[ReplicaSpec]:
        return parse_replicas(self.replicas)

    @property
    def queued_method_set(self) -> frozenset[str]:
        return frozenset(m for m in self.queued_methods.split(",") if m)
