"""The pod server's settings: one class, read from `GPUSCALE_*` environment variables and CLI flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelKind = Literal["sleep", "matmul"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class ServerSettings(BaseSettings):
    """Every field is a `gpuscale serve --kebab-name` flag and a `GPUSCALE_UPPER_NAME` variable.

    In Kubernetes, set `enableServiceLinks: false` on the pod: a Service named `gpuscale` would
    otherwise inject `GPUSCALE_PORT=tcp://...` into the environment.
    """

    model_config = SettingsConfigDict(env_prefix="GPUSCALE_", extra="forbid", protected_namespaces=())

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in a pod)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on")
    model: ModelKind = Field("sleep", description="which model to serve")
    model_name: str | None = Field(
        None,
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="name in /v2/models/{name} (default: the model kind)",
    )
    slots: int = Field(1, ge=1, le=64, description="requests on the model at once")
    max_queue: int = Field(8, ge=0, le=100_000, description="requests that may wait beyond the running ones")
    drain_seconds: float = Field(
        900.0, gt=0, description="on SIGTERM, how long admitted requests may take to finish"
    )
    max_request_seconds: float = Field(
        900.0, gt=0, description="longest job a request may ask for (sleep model's seconds)"
    )
    sleep_seconds: float = Field(1.0, ge=0, description="sleep model: default job length in seconds")
    load_seconds: float = Field(
        0.0, ge=0, le=3600, description="sleep model: time its load takes, standing in for weights"
    )
    matmul_backend: Literal["auto", "torch", "numpy"] = Field(
        "auto", description="matmul model: torch when installed (auto), or force one"
    )
    matmul_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="matmul model with torch: cuda when present (auto), or force one"
    )
    matmul_size: int = Field(256, ge=1, description="matmul model: default matrix size")
    matmul_iterations: int = Field(4, ge=1, description="matmul model: default multiplications")
    matmul_max_size: int = Field(8192, ge=1, description="matmul model: largest size a request may ask for")
    matmul_max_iterations: int = Field(
        10_000, ge=1, description="matmul model: most iterations a request may ask for"
    )
    log_level: LogLevel = Field("info", description="server log level")

    @property
    def served_name(self) -> str:
        return self.model_name or self.model
