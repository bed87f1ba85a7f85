"""The control loop against a fake backend and a gateway admin API served by httpx's MockTransport:
victims are idle only, cordoned first, and a replica found busy at the cordon is kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from gpuscale.control.gateway_admin import GatewayAdmin, GatewayView, ReplicaView
from gpuscale.control.loop import ControlLoop, ReplicaStatus, choose_victims
from gpuscale.control.policy import PolicyState
from gpuscale.spec import AutoscalingSpec


def replica(name: str, outstanding: int = 0, idle_seconds: float = 0.0, state: str = "ready") -> ReplicaView:
    return ReplicaView(name, f"http://{name}", 1, state, outstanding, idle_seconds)


def view(*replicas: ReplicaView, queued: int = 0) -> GatewayView:
    return GatewayView(queued, sum(r.outstanding for r in replicas), False, replicas)


@pytest.mark.parametrize(
    ("count", "starting", "replicas", "victims"),
    [
        (2, [], [replica("a", 1), replica("b", 0, 5), replica("c", 0, 50)], ["c", "b"]),
        (3, [], [replica("a", 1), replica("b", 0, 5)], ["b"]),  # never the busy one, even if short
        (2, ["s1", "s2"], [replica("a", 0, 99)], ["s2", "s1"]),  # starting ones first, newest first
        (2, ["s1"], [replica("a", 0, 1), replica("b", 0, 9)], ["s1", "b"]),
        (1, [], [replica("a", 0, 9, "cordoned"), replica("b", 0, 1)], ["b"]),  # a cordoned one is not counted
        (0, ["s1"], [replica("a")], []),
    ],
)
def test_victims_are_idle_longest_first(
    count: int, starting: list[str], replicas: list[ReplicaView], victims: list[str]
) -> None:
    assert choose_victims(count, starting, view(*replicas)) == victims


class FakeGateway:
    """The admin API's semantics: cordon answers the replica's state at that moment."""

    def __init__(self, replicas: dict[str, int], queued: int = 0) -> None:
        self.outstanding = replicas  # name -> outstanding
        self.queued = queued
        self.cordoned: set[str] = set()
        self.calls: list[str] = []
        self.busy_on_cordon: set[str] = set()  # a request lands on these just before the cordon
        self.fail = False

    def _json(self, name: str) -> dict[str, Any]:
        state = "cordoned" if name in self.cordoned else "ready"
        busy = self.outstanding[name]
        return {"name": name, "url": f"http://{name}", "slots": 1, "state": state, "outstanding": busy,
                "idle": busy == 0, "idle_seconds": 0.0 if busy else 10.0}  # fmt: skip

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            raise httpx.ConnectError("refused")
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        if path == "/replicas":
            replicas = [self._json(n) for n in self.outstanding]
            body = {"queued": self.queued, "inflight": sum(self.outstanding.values()), "draining": False}
            return httpx.Response(200, json={**body, "replicas": replicas})
        name = path.split("/")[2]
        if name not in self.outstanding:
            return httpx.Response(404, json={"error": "no such replica"})
        if path.endswith("/cordon"):
            if name in self.busy_on_cordon:
                self.outstanding[name] = 1
            self.cordoned.add(name)
        elif path.endswith("/uncordon"):
            self.cordoned.discard(name)
        elif request.method == "DELETE":
            del self.outstanding[name]
        return httpx.Response(200, json=self._json(name) if name in self.outstanding else {})


class FakeBackend:
    def __init__(self, ready: Sequence[str], starting: Sequence[str] = ()) -> None:
        self.phases = {n: "ready" for n in ready} | {n: "starting" for n in starting}
        self.stopped: list[str] = []
        self.count = 0

    def replicas(self) -> list[ReplicaStatus]:
        return [ReplicaStatus(n, p) for n, p in self.phases.items()]  # type: ignore[arg-type]

    async def start(self, count: int) -> list[str]:
        names = [f"new-{self.count + i}" for i in range(count)]
        self.count += count
        self.phases.update(dict.fromkeys(names, "starting"))
        return names

    async def stop(self, names: Sequence[str]) -> None:
        for name in names:
            del self.phases[name]
        self.stopped += names


def make_loop(
    gateway: FakeGateway, backend: FakeBackend, **spec: Any
) -> tuple[ControlLoop, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(gateway.handle))
    admin = GatewayAdmin("http://gateway", client)
    loop = ControlLoop(AutoscalingSpec.model_validate(spec), backend, admin, clock=lambda: 1000.0)
    return loop, client


QUIET = PolicyState(samples=tuple((1000.0 - i, 0.0) for i in range(60, 0, -1)), below_since=900.0)


async def test_a_burst_starts_replicas_on_the_first_tick() -> None:
    gateway = FakeGateway({"a": 1}, queued=5)
    backend = FakeBackend(["a"])
    loop, client = make_loop(gateway, backend)
    async with client:
        report = await loop.tick()
    assert report.decision.kind == "up"
    assert report.started == ["new-0", "new-1", "new-2", "new-3", "new-4"]


async def test_scale_down_cordons_idle_victims_and_stops_only_those() -> None:
    gateway = FakeGateway({"a": 1, "b": 0, "c": 0, "d": 0})
    backend = FakeBackend(["a", "b", "c", "d"])
    loop, client = make_loop(gateway, backend)
    loop.state = QUIET
    async with client:
        report = await loop.tick()
    # The 60 s average (1/61) wants one replica; the rate allows halving: two go, never the busy "a".
    assert report.decision.desired == 2
    assert sorted(report.stopped) == sorted(backend.stopped)
    assert len(report.stopped) == 2
    assert "a" not in report.stopped
    assert all(f"POST /replicas/{name}/cordon" in gateway.calls for name in report.stopped)


async def test_a_victim_that_turns_busy_at_the_cordon_is_kept_and_uncordoned() -> None:
    gateway = FakeGateway({"a": 0, "b": 0})
    gateway.busy_on_cordon = {"a", "b"}
    backend = FakeBackend(["a", "b"])
    loop, client = make_loop(gateway, backend)
    loop.state = QUIET
    async with client:
        report = await loop.tick()
    assert report.decision.desired == 1
    assert report.stopped == []
    assert backend.stopped == []
    assert len(report.spared) == 1
    assert gateway.cordoned == set()


async def test_no_load_data_holds_and_stops_nothing() -> None:
    gateway = FakeGateway({"a": 0, "b": 0})
    gateway.fail = True
    backend = FakeBackend(["a", "b"])
    loop, client = make_loop(gateway, backend)
    loop.state = QUIET
    async with client:
        report = await loop.tick()
    assert (report.decision.kind, report.decision.desired, report.stopped) == ("no-data", 2, [])


async def test_while_draining_nothing_is_stopped() -> None:
    gateway = FakeGateway({"a": 0, "b": 0})
    backend = FakeBackend(["a", "b"])
    loop, client = make_loop(gateway, backend)
    loop.state = QUIET
    loop.scale_down = False
    async with client:
        report = await loop.tick()
    assert report.decision.desired == 1
    assert backend.stopped == []


async def test_starting_replicas_are_removed_before_ready_ones() -> None:
    gateway = FakeGateway({"a": 0})
    backend = FakeBackend(["a"], starting=["s1", "s2"])
    loop, client = make_loop(gateway, backend)
    loop.state = QUIET
    async with client:
        report = await loop.tick()
    # 3 → 2 (at most halving): the newest starting one goes, not the ready one.
    assert (report.decision.desired, report.stopped) == (2, ["s2"])
