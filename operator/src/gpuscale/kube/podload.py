"""Load read from the pods themselves, for a service without a gateway.

The pods' gauges are named by ``spec.metrics`` (ours by default; vLLM's, TGI's or Triton's where the
image is theirs). Summed, they give the loop the same numbers a gateway would: waiting, running,
and which replicas are idle. There is no gateway to stop sending to a victim, so "cordon" only
re-reads it: a pod busy at that moment is kept, an idle one goes, and a request that lands on it
after that is the Service's routing to retry (which is why the gateway is the default).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx

from gpuscale.control.gateway_admin import GatewayAdmin, GatewayUnavailable, GatewayView, ReplicaView
from gpuscale.promtext import metric_value, parse_samples


class PodLoad(GatewayAdmin):
    """The gateway admin API's reads, answered by scraping each ready pod's /metrics."""

    def __init__(
        self, client: httpx.AsyncClient, queue_metric: str, inflight_metric: str, slots: int
    ) -> None:
        super().__init__("http://pods", client)
        self.queue_metric, self.inflight_metric, self.slots = queue_metric, inflight_metric, slots
        self.pods: dict[str, str] = {}  # name → http://ip:port of the ready pods, set before each tick
        self._busy_at: dict[str, float] = {}

    async def _load(self, name: str, url: str) -> tuple[float, float]:
        try:
            response = await self._client.get(f"{url}/metrics", timeout=self._timeout)
            samples = parse_samples(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            raise GatewayUnavailable(f"pod {name} /metrics: {exc!r}") from exc
        queued = metric_value(samples, self.queue_metric)
        running = metric_value(samples, self.inflight_metric)
        if queued is None or running is None:
            raise GatewayUnavailable(f"pod {name} exposes no {self.queue_metric} or {self.inflight_metric}")
        return queued, running

    def _replica(self, name: str, queued: float, running: float, now: float) -> ReplicaView:
        outstanding = round(queued + running)
        if outstanding or name not in self._busy_at:
            self._busy_at[name] = now
        return ReplicaView(name, self.pods[name], self.slots, "ready", outstanding, now - self._busy_at[name])

    async def view(self) -> GatewayView:
        names: Sequence[str] = list(self.pods)
        loads = await asyncio.gather(*(self._load(n, self.pods[n]) for n in names))
        now = time.monotonic()
        replicas = tuple(self._replica(n, q, r, now) for n, (q, r) in zip(names, loads, strict=True))
        queued = round(sum(q for q, _ in loads))
        running = round(sum(r for _, r in loads))
        return GatewayView(queued, running, False, replicas)

    async def cordon(self, name: str) -> ReplicaView | None:
        if name not in self.pods:
            return None
        queued, running = await self._load(name, self.pods[name])
        return self._replica(name, queued, running, time.monotonic())

    async def uncordon(self, name: str) -> None:
        return None  # nothing was held back
