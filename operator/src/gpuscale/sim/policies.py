"""What every simulated autoscaler sees and answers, and ours: the real `decide`, fed as the loop feeds it.

The model calls `desired(view)` every `interval` seconds of simulated time and scales to the answer. How
replicas go when the count falls is the autoscaler's `removal`: `idle-only` is gpuscale's control loop
(only replicas the gateway holds idle are stopped, starting ones first), `replicaset` is what a
Deployment does when an HPA, KEDA or the KPA lowers its replicas (the ReplicaSet picks victims by its
own ranking, busy or not; see `model.Simulation.remove`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gpuscale.control.policy import Decision, Observation, PolicyState, decide
from gpuscale.spec import AutoscalingSpec

Removal = Literal["idle-only", "replicaset"]


@dataclass(frozen=True)
class ClusterView:
    """The service at one moment, as a controller could read it."""

    time: float
    queued: int  # accepted, waiting for a slot (the gateway's queue, or the pods' own queues)
    running: int  # on a GPU now, terminating pods included (the gateway still counts them in flight)
    ready: int  # replicas serving (not terminating)
    starting: int  # replicas started, model still loading
    idle: int  # ready replicas with nothing outstanding
    # Time-averaged outstanding requests over each whole second so far: what Knative's queue-proxies
    # and activator report every second. Shared with the model, never copied.
    concurrency: Sequence[float] = ()

    @property
    def replicas(self) -> int:
        return self.ready + self.starting

    @property
    def outstanding(self) -> int:
        return self.queued + self.running


class Autoscaler(Protocol):
    name: str
    interval: float  # seconds between decisions
    removal: Removal

    def desired(self, view: ClusterView) -> int:
        """The replica count to scale to now (the model starts or removes replicas to reach it)."""
        ...


class Gpuscale:
    """Our policy, through the real module: `gpuscale.control.policy.decide`, called once per
    `tickSeconds` with the `Observation` that `gpuscale.control.loop.ControlLoop.observe` builds from
    the gateway's view (queued, in flight, idle ready replicas) and the backend's replicas (ready and
    starting; stopping ones are not counted). Its `PolicyState` goes from one tick to the next as the
    loop carries it."""

    removal: Removal = "idle-only"

    def __init__(self, spec: AutoscalingSpec | None = None, name: str = "gpuscale") -> None:
        self.spec = spec if spec is not None else AutoscalingSpec()
        self.name = name
        self.interval = self.spec.tick_seconds
        self.state = PolicyState()
        self.last: Decision | None = None

    @staticmethod
    def observation(view: ClusterView) -> Observation:
        return Observation(view.time, view.queued, view.running, view.ready, view.starting, view.idle)

    def desired(self, view: ClusterView) -> int:
        decision = decide(self.spec, self.observation(view), self.state)
        self.state = decision.state
        self.last = decision
        return decision.desired


class Fixed:
    """A reference, not an autoscaler: always `replicas`. What static provisioning would cost."""

    removal: Removal = "idle-only"
    interval = 60.0

    def __init__(self, replicas: int, name: str | None = None) -> None:
        self.replicas = replicas
        self.name = name if name is not None else f"fixed {replicas}"

    def desired(self, view: ClusterView) -> int:
        return self.replicas


class Instant:
    """A reference bound, not an autoscaler: holds its count until `at`, the moment the burst begins,
    then starts `max_replicas` at once and never stops one. A reaction time of zero: no autoscaler that
    reacts to load gets lower latency on that burst (only one that scales before it comes); what is left
    is the start-up time."""

    removal: Removal = "idle-only"
    interval = 1.0

    def __init__(self, max_replicas: int, at: float, name: str = "perfect reaction (bound)") -> None:
        self.max_replicas = max_replicas
        self.at = at
        self.name = name

    def desired(self, view: ClusterView) -> int:
        return self.max_replicas if view.time >= self.at else view.replicas
