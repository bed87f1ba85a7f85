"""The control loop: every tick, observe the load, let the policy decide, and act on a backend.

The same loop drives local processes (`gpuscale local`) and a Kubernetes Deployment (the operator); a
backend only has to start replicas, list them, and stop exactly the ones it is told to.

Scale-down is safe by construction: victims are chosen among idle replicas only (starting ones first,
then the longest idle), the gateway is told to stop sending to each one, and only those the gateway
confirms idle at that moment are stopped. A busy replica is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gpuscale.control.gateway_admin import GatewayAdmin, GatewayUnavailable, GatewayView
from gpuscale.control.policy import Decision, Observation, PolicyState, decide
from gpuscale.control.victims import pick_victims
from gpuscale.spec import AutoscalingSpec

log = logging.getLogger("gpuscale.control")

Phase = Literal["starting", "ready", "stopping"]


@dataclass(frozen=True)
class ReplicaStatus:
    name: str
    phase: Phase


class Backend(Protocol):
    def replicas(self) -> Sequence[ReplicaStatus]:
        """Every replica not yet gone, in start order."""
        ...

    async def start(self, count: int) -> Sequence[str]:
        """Start `count` replicas (they register with the gateway themselves once ready)."""
        ...

    async def stop(self, names: Sequence[str]) -> None:
        """Drain and stop exactly these replicas (the gateway sends them nothing any more)."""
        ...


def choose_victims(count: int, starting: Sequence[str], view: GatewayView) -> list[str]:
    """Up to `count` replicas that are safe to remove: starting ones (they hold no request; newest
    first), then ready ones with nothing outstanding, longest idle first. Never a busy one."""
    idle_for = {r.name: r.idle_seconds for r in view.replicas if r.state == "ready" and r.idle}
    return pick_victims(count, starting, list(idle_for), lambda name: -idle_for[name])


@dataclass
class TickReport:
    time: float
    observation: Observation
    decision: Decision
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    spared: list[str] = field(default_factory=list)  # victims found busy when cordoned: kept
    error: str | None = None

    @property
    def scaled(self) -> bool:
        return bool(self.started or self.stopped)


class ControlLoop:
    def __init__(
        self,
        spec: AutoscalingSpec,
        backend: Backend,
        gateway: GatewayAdmin,
        *,
        fixed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[TickReport], None] | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.gateway = gateway
        self.fixed = fixed
        self.clock = clock
        self.on_tick = on_tick
        self.state = PolicyState()
        self.scale_down = True  # off while draining: every queued request still needs its replicas
        self.last: TickReport | None = None

    async def observe(self) -> tuple[Observation, GatewayView | None, list[ReplicaStatus]]:
        replicas = list(self.backend.replicas())
        ready = sum(1 for r in replicas if r.phase == "ready")
        starting = sum(1 for r in replicas if r.phase == "starting")
        now = self.clock()
        try:
            view: GatewayView | None = await self.gateway.view()
        except GatewayUnavailable as exc:
            log.info("no load data this tick: %s", exc)
            view = None
        if view is None:
            return Observation(now, None, None, ready, starting), None, replicas
        return Observation(now, view.queued, view.inflight, ready, starting, view.idle_ready), view, replicas

    async def tick(self) -> TickReport:
        observation, view, replicas = await self.observe()
        decision = decide(self.spec, observation, self.state, self.fixed)
        self.state = decision.state
        report = TickReport(observation.time, observation, decision)
        current = observation.replicas
        try:
            if decision.desired > current:
                report.started = list(await self.backend.start(decision.desired - current))
            elif decision.desired < current and self.scale_down and view is not None:
                starting = [r.name for r in replicas if r.phase == "starting"]
                await self._scale_down(current - decision.desired, starting, view, report)
        except (GatewayUnavailable, OSError) as exc:
            report.error = str(exc)
            log.warning("tick could not act: %s", exc)
        self.last = report
        if self.on_tick is not None:
            self.on_tick(report)
        return report

    async def _scale_down(
        self, count: int, starting: list[str], view: GatewayView, report: TickReport
    ) -> None:
        confirmed = []
        for name in choose_victims(count, starting, view):
            if name in starting:
                confirmed.append(name)
                continue
            state = await self.gateway.cordon(name)
            if state is None or state.idle:
                confirmed.append(name)  # idle now, and cordoned: it gets nothing new
            else:
                await self.gateway.uncordon(name)
                report.spared.append(name)
        if confirmed:
            await self.backend.stop(confirmed)
        report.stopped = confirmed

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `tickSeconds` until `stop` is set; a tick that fails is logged, not fatal."""
        period = self.spec.tick_seconds
        next_tick = self.clock()
        while not stop.is_set():
            await self.tick()
            next_tick += period
            delay = next_tick - self.clock()
            if delay < 0:  # a slow tick: start the next one now rather than bunching up
                next_tick, delay = self.clock(), 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
