"""The controller's side of the gateway's admin API: read the queue, register, cordon and remove
replicas. One long-lived client, short timeouts: a slow gateway must not stall a tick."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class GatewayUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class ReplicaView:
    name: str
    url: str
    slots: int
    state: str  # ready, cordoned, down
    outstanding: int
    idle_seconds: float

    @property
    def idle(self) -> bool:
        return self.outstanding == 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaView:
        return cls(
            name=str(data["name"]),
            url=str(data["url"]),
            slots=int(data["slots"]),
            state=str(data["state"]),
            outstanding=int(data["outstanding"]),
            idle_seconds=float(data.get("idle_seconds") or 0.0),
        )


@dataclass(frozen=True)
class GatewayView:
    queued: int
    inflight: int
    draining: bool
    replicas: tuple[ReplicaView, ...]

    def replica(self, name: str) -> ReplicaView | None:
        return next((r for r in self.replicas if r.name == name), None)

    @property
    def idle_ready(self) -> int:
        return sum(1 for r in self.replicas if r.state == "ready" and r.idle)


class GatewayAdmin:
    def __init__(self, admin_url: str, client: httpx.AsyncClient, timeout: float = 1.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._client = client
        self._timeout = timeout

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._client.request(method, self.admin_url + path, json=body, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"gateway admin {method} {path}: {exc!r}") from exc

    async def view(self) -> GatewayView:
        response = await self._call("GET", "/replicas")
        if response.status_code != 200:
            raise GatewayUnavailable(f"gateway admin GET /replicas: HTTP {response.status_code}")
        data = response.json()
        return GatewayView(
            queued=int(data["queued"]),
            inflight=int(data["inflight"]),
            draining=bool(data.get("draining", False)),
            replicas=tuple(ReplicaView.from_json(r) for r in data["replicas"]),
        )

    async def register(self, name: str, url: str, slots: int) -> None:
        response = await self._call("PUT", f"/replicas/{name}", {"url": url, "slots": slots})
        if response.status_code != 200:
            raise GatewayUnavailable(f"gateway refused replica {name}: {response.text}")

    async def remove(self, name: str) -> None:
        response = await self._call("DELETE", f"/replicas/{name}")
        if response.status_code not in (200, 404):
            raise GatewayUnavailable(f"gateway could not remove replica {name}: {response.text}")

    async def cordon(self, name: str) -> ReplicaView | None:
        """Stop new requests to `name`; its state at that moment (None when the gateway has no such one)."""
        response = await self._call("POST", f"/replicas/{name}/cordon")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise GatewayUnavailable(f"gateway could not cordon replica {name}: {response.text}")
        return ReplicaView.from_json(response.json())

    async def uncordon(self, name: str) -> None:
        response = await self._call("POST", f"/replicas/{name}/uncordon")
        if response.status_code not in (200, 404):
            raise GatewayUnavailable(f"gateway could not uncordon replica {name}: {response.text}")
