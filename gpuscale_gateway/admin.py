"""The admin port: metrics, health, and the replicas API the controller drives (add, remove, cordon).

Raw ASGI like the data plane: six routes do not need a framework, and the answers stay in one
JSON error shape.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.types import Receive, Scope, Send

from gpuscale_gateway.dispatch import Dispatcher
from gpuscale_gateway.metrics import GatewayMetrics
from gpuscale_gateway.registry import Registry, Replica
from gpuscale_gateway.settings import ReplicaSpec
from inference_app.asgi import read_body, send_error, send_json

MAX_BODY_BYTES = 1 << 20
METRICS_TYPE = CONTENT_TYPE_LATEST.encode()


class ReplicaBody(BaseModel):
    model_config = {"extra": "forbid"}

    url: str = Field(description="http://host:port of the replica's server")
    slots: int | None = Field(None, ge=1, le=1024, description="requests it runs at once")


class ReplicaSet(BaseModel):
    model_config = {"extra": "forbid"}

    replicas: list[ReplicaSpec]

    @field_validator("replicas")
    @classmethod
    def _unique(cls, replicas: list[ReplicaSpec]) -> list[ReplicaSpec]:
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("replica names must be unique")
        return replicas


class GatewayState(Protocol):
    """What the admin app reads of the gateway."""

    registry: Registry
    dispatcher: Dispatcher
    metrics: GatewayMetrics

    @property
    def draining(self) -> bool: ...


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


class Admin:
    """ASGI app of the admin port."""

    def __init__(self, gateway: GatewayState) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/metrics":
            if method != "GET":
                return await self._wrong_method(send, "GET")
            return await send_json(send, 200, self.gateway.metrics.render(), content_type=METRICS_TYPE)
        if path == "/healthz":
            if method != "GET":
                return await self._wrong_method(send, "GET")
            return await send_json(send, 200, {"status": "live"})
        if path == "/readyz":
            if method != "GET":
                return await self._wrong_method(send, "GET")
            if self.gateway.draining:
                return await send_json(send, 503, {"status": "draining"})
            return await send_json(send, 200, {"status": "ready"})
        if path == "/replicas":
            if method == "GET":
                return await send_json(send, 200, self.listing())
            if method == "PUT":
                return await self._replace(receive, send)
            return await self._wrong_method(send, "GET, PUT")
        if path.startswith("/replicas/"):
            name, _, action = path[len("/replicas/") :].partition("/")
            registry = self.gateway.registry
            if name and not action:
                if method == "GET":
                    return await self._replica(send, name, registry.get(name))
                if method == "PUT":
                    return await self._put(name, receive, send)
                if method == "DELETE":
                    return await self._replica(send, name, registry.remove(name))
                return await self._wrong_method(send, "GET, PUT, DELETE")
            if name and action in ("cordon", "uncordon"):
                if method != "POST":
                    return await self._wrong_method(send, "POST")
                found = registry.cordon(name) if action == "cordon" else registry.uncordon(name)
                return await self._replica(send, name, found)
        await send_error(send, 404, f"no such path: {path}")

    async def _wrong_method(self, send: Send, allowed: str) -> None:
        await send_error(send, 405, f"method not allowed; use {allowed}", [(b"allow", allowed.encode())])

    def listing(self) -> dict[str, Any]:
        gateway = self.gateway
        now = time.monotonic()
        return {
            "queued": len(gateway.dispatcher.queue),
            "inflight": gateway.dispatcher.inflight,
            "draining": gateway.draining,
            "replicas": [replica.snapshot(now) for replica in gateway.registry],
        }

    async def _json_body(self, receive: Receive, send: Send) -> tuple[bool, Any]:
        """(True, the parsed body), or (False, None) once answered (413, 422) or when the client left."""
        read = await read_body(receive, MAX_BODY_BYTES)
        if read is None:
            return False, None
        raw, complete = read
        if not complete or len(raw) > MAX_BODY_BYTES:
            await send_error(send, 413, f"body larger than {MAX_BODY_BYTES} bytes")
            return False, None
        try:
            return True, json.loads(raw)
        except ValueError as exc:
            await send_error(send, 422, f"body is not JSON: {exc}")
            return False, None

    async def _replica(self, send: Send, name: str, found: Replica | dict[str, Any] | None) -> None:
        """The replica's snapshot (or the one `Registry.cordon` took), or 404 when there is none."""
        if found is None:
            return await send_error(send, 404, f"no replica named {name!r}")
        await send_json(send, 200, found if isinstance(found, dict) else found.snapshot())

    async def _put(self, name: str, receive: Receive, send: Send) -> None:
        ok, data = await self._json_body(receive, send)
        if not ok:
            return
        try:
            body = ReplicaBody.model_validate(data)
            spec = ReplicaSpec(name=name, url=body.url, slots=body.slots)
        except ValidationError as exc:
            return await send_error(send, 422, _summary(exc))
        replica = self.gateway.registry.add(spec.name, spec.url, spec.slots)
        await send_json(send, 200, replica.snapshot())

    async def _replace(self, receive: Receive, send: Send) -> None:
        ok, data = await self._json_body(receive, send)
        if not ok:
            return
        try:
            specs = ReplicaSet.model_validate(data).replicas
        except ValidationError as exc:
            return await send_error(send, 422, _summary(exc))
        self.gateway.registry.replace(specs)
        await send_json(send, 200, self.listing())
