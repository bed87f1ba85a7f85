"""The simpy model: a trace's requests, a gateway (one FIFO queue) or random per-pod queues, one-slot
replicas that take `startup` seconds to load their model, and one autoscaler deciding every `interval`.

What it models, and why:
- A replica costs from the moment it is started until it is gone, start-up included: that is when a GPU
  is held. Replica-seconds are counted from 0 until the trace ends or the last request is answered,
  whichever is later.
- One queue (`routing="single"`) is gpuscale's gateway: a request goes to a free ready replica, the one
  that finished a request most recently (so work packs onto a hot set and the rest go idle), else waits
  in FIFO order. `routing="random"` is a plain Kubernetes Service: each request to a ready pod picked at
  random, waiting in that pod's own queue even while another pod is idle.
- Scaling up starts replicas at once; each is ready `startup` seconds later (the same for every
  autoscaler). Scaling down, by the autoscaler's `removal`:
  `idle-only` (gpuscale's loop): starting replicas first (newest first), then ready replicas with nothing
  outstanding, longest idle first; a busy replica is never stopped, so fewer may go than asked.
  `replicaset` (a Deployment under HPA, KEDA or KPA): the ReplicaSet's ranking (`controller.ActivePods`,
  kubernetes pkg/controller/controller_utils.go): not-ready pods first, then the most recently ready,
  newest first among equals (the logarithmic age buckets and random UID tie-break are left out). A
  busy victim gets SIGTERM: it leaves the endpoints (nothing new reaches it) and, with a graceful drain
  as our pod server does it (grace period from `maxRequestSeconds`), finishes what it holds, its
  running request and, with per-pod queues, the ones waiting on it; it keeps its GPU until then, and
  those seconds count. No request is lost; such pods are counted in `busy_removed`.
- The queue is unbounded unless `max_queue` is set (then the gateway, or each pod with random routing,
  rejects arrivals beyond it, as the gateway's 429).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import simpy
from numpy.typing import NDArray

from gpuscale.control.victims import pick_victims
from gpuscale.sim.policies import Autoscaler, ClusterView
from gpuscale.sim.traces import FloatArray, Trace

Routing = Literal["single", "random"]
ROUTINGS: tuple[Routing, ...] = ("single", "random")

STARTING, READY, TERMINATING, GONE = "starting", "ready", "terminating", "gone"


@dataclass(frozen=True)
class SimConfig:
    startup: tuple[float, float] = (60.0, 60.0)  # seconds to load the model: fixed, or uniform in a range
    slots: int = 1
    routing: Routing = "single"
    max_queue: int | None = None  # None: unbounded
    seed: int = 0
    timeline_step: int | None = None  # seconds per timeline point; None: about 1500 points per run
    tail: float = 3600.0  # after the trace ends, how long the backlog may take to drain at most
    # Figures count from here on: every autoscaler starts cold (empty windows, no history), and the
    # first minutes show how each one settles, not how it handles the trace.
    warmup: float = 0.0
    # When the autoscaler first decides, within its interval; None: a seeded random phase, since a real
    # controller's ticks have no relation to when a burst comes.
    phase: float | None = None

    def __post_init__(self) -> None:
        low, high = self.startup
        if not 0 <= low <= high:
            raise ValueError(f"start-up time must be 0 or more (low <= high), not {low:g}-{high:g}")
        if self.slots < 1:
            raise ValueError(f"slots per replica must be 1 or more, not {self.slots}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, not {self.routing!r}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max queue must be 0 or more, not {self.max_queue}")
        if self.warmup < 0:
            raise ValueError(f"warm-up must be 0 or more, not {self.warmup:g}")


class Replica:
    __slots__ = (
        "gone",
        "idle_since",
        "last_finished",
        "number",
        "queue",
        "ready_at",
        "running",
        "started",
        "state",
    )

    def __init__(self, number: int, started: float) -> None:
        self.number = number
        self.started = started
        self.ready_at = math.nan
        self.state = STARTING
        self.running = 0
        self.queue: deque[int] = deque()  # per-pod queue (random routing only)
        self.last_finished = -math.inf
        self.idle_since = started
        self.gone = math.nan


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # holding a GPU: starting, ready or terminating
    ready: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)


@dataclass
class ScaleEvent:
    time: float
    before: int
    after: int


@dataclass
class RunResult:
    """What happened, raw; the properties are the figures over the measured window [warmup, end]."""

    policy: str
    trace: Trace
    config: SimConfig
    end: float
    start: FloatArray  # when each request got a slot; NaN if it never did
    finish: FloatArray
    rejected_mask: NDArray[np.bool_]
    # (started, gone) per replica, the `initial` ready ones first; gone is `end` for those still there
    lifetimes: FloatArray
    initial: int
    busy_removals: list[float]  # when a pod was removed while it held requests
    events: list[ScaleEvent]
    timeline: Timeline
    wall_seconds: float

    @property
    def warmup(self) -> float:
        return min(self.config.warmup, self.trace.duration)

    @property
    def measured(self) -> NDArray[np.bool_]:
        """The requests that count: those arriving after the warm-up."""
        return self.trace.arrivals >= self.warmup

    @property
    def rejected(self) -> int:
        return int((self.rejected_mask & self.measured).sum())

    @property
    def work(self) -> float:
        """GPU-seconds of the measured requests: the replica-seconds no autoscaler can go below."""
        return float(self.trace.jobs[self.measured].sum())

    @property
    def replica_seconds(self) -> float:
        """Seconds replicas held a GPU (start-up included) within [warmup, end]."""
        started = np.maximum(self.lifetimes[:, 0], self.warmup)
        return float(np.clip(self.lifetimes[:, 1] - started, 0.0, None).sum())

    @property
    def replicas_started(self) -> int:
        """Replicas the autoscaler started after the warm-up (not the ones ready at 0 s)."""
        return int((self.lifetimes[self.initial :, 0] >= self.warmup).sum())

    @property
    def busy_removed(self) -> int:
        return sum(1 for at in self.busy_removals if at >= self.warmup)

    @property
    def peak_replicas(self) -> int:
        """The most replicas holding a GPU at once after the warm-up."""
        changes = [(max(s, self.warmup), 1) for s, g in self.lifetimes.tolist() if g > self.warmup]
        changes += [(g, -1) for s, g in self.lifetimes.tolist() if g > self.warmup and g < self.end]
        count = peak = 0
        for _, change in sorted(changes, key=lambda c: (c[0], c[1])):
            count += change
            peak = max(peak, count)
        return peak

    @property
    def scale_ups(self) -> int:
        return sum(1 for e in self.events if e.after > e.before and e.time >= self.warmup)

    @property
    def scale_downs(self) -> int:
        return sum(1 for e in self.events if e.after < e.before and e.time >= self.warmup)


def initial_replicas(trace: Trace, min_replicas: int, max_replicas: int, window: float = 300.0) -> int:
    """Replicas ready at t=0 for every autoscaler alike: the load of the trace's first `window` seconds,
    rounded up, plus one, so no run starts with a backlog or a crowd of idle replicas."""
    first = trace.arrivals < window
    load = float(trace.jobs[first].sum()) / min(window, trace.duration) if trace.requests else 0.0
    return max(min_replicas, min(max_replicas, math.ceil(load) + 1))


class Simulation:
    def __init__(self, trace: Trace, policy: Autoscaler, config: SimConfig, initial: int) -> None:
        self.trace = trace
        self.policy = policy
        self.config = config
        self.env = simpy.Environment()
        self.rnd = random.Random(f"{config.seed}:model")
        self.jobs: list[float] = trace.jobs.tolist()
        n = trace.requests
        self.start = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.single = config.routing == "single"
        self.slots = config.slots
        self.queue: deque[int] = deque()  # the gateway's (single) or waiting for any pod (random)
        self.starting: list[Replica] = []
        self.ready: list[Replica] = []
        # Free one-slot replicas, in the gateway's order of preference: the most recent finisher last in
        # `recent` (popitem takes it), then those that never ran a request in registration order.
        self.recent: dict[Replica, None] = {}
        self.fresh: deque[Replica] = deque()
        self.numbers = itertools.count(1)
        self.outstanding = 0
        self.running = 0
        self.rejected = np.zeros(n, dtype=bool)
        self.alive = 0
        self.busy_removals: list[float] = []
        self.events: list[ScaleEvent] = []
        self.concurrency: list[float] = []
        self.area = 0.0
        self.area_mark = 0.0
        self.last_change = 0.0
        self.arrivals_done = False
        self.done = self.env.event()
        self.timeline = Timeline()
        self.all_replicas: list[Replica] = []
        self.initial = initial
        for _ in range(initial):
            replica = self._new_replica()
            self._make_ready(replica)

    # -- requests -----------------------------------------------------------------------------------

    def _account(self) -> None:
        now = self.env.now
        self.area += self.outstanding * (now - self.last_change)
        self.last_change = now

    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        for index, at in enumerate(self.trace.arrivals.tolist()):
            delay = at - env.now
            if delay > 0:
                yield env.timeout(delay)
            self._arrive(index)
        self.arrivals_done = True
        self._check_done()

    def _arrive(self, index: int) -> None:
        self._account()
        limit = self.config.max_queue
        if self.single or not self.ready:
            replica = self._pick()
            if replica is not None:
                self.outstanding += 1
                self._serve(replica, index)
            elif limit is not None and len(self.queue) >= limit:
                self.rejected[index] = True
            else:
                self.outstanding += 1
                self.queue.append(index)
            return
        pod = self.ready[self.rnd.randrange(len(self.ready))]
        if pod.running >= self.slots and limit is not None and len(pod.queue) >= limit:
            self.rejected[index] = True
            return
        self.outstanding += 1
        self._send(pod, index)

    def _send(self, pod: Replica, index: int) -> None:
        """Random routing: `index` runs on `pod` now if it has a slot free, else waits in its queue."""
        if pod.running < self.slots:
            self._unidle(pod)
            self._serve(pod, index)
        else:
            pod.queue.append(index)

    def _pick(self) -> Replica | None:
        """The gateway's choice among free ready replicas (gpuscale_gateway.dispatch.Dispatcher.pick)."""
        if self.slots == 1:
            if self.recent:
                return self.recent.popitem()[0]
            if self.fresh:
                return self.fresh.popleft()
            return None
        best: Replica | None = None
        for replica in self.ready:
            if replica.running >= self.slots:
                continue
            if best is None or (replica.running, -replica.last_finished) < (
                best.running,
                -best.last_finished,
            ):
                best = replica
        return best

    def _unidle(self, replica: Replica) -> None:
        if self.slots != 1 or replica.running:
            return
        if replica in self.recent:
            del self.recent[replica]
        elif replica in self.fresh:
            self.fresh.remove(replica)

    def _serve(self, replica: Replica, index: int) -> None:
        replica.running += 1
        self.running += 1
        self.start[index] = self.env.now
        done = self.env.timeout(self.jobs[index])
        done.callbacks.append(lambda _event: self._finish(replica, index))

    def _finish(self, replica: Replica, index: int) -> None:
        now = self.env.now
        self._account()
        self.finish[index] = now
        self.outstanding -= 1
        self.running -= 1
        replica.running -= 1
        replica.last_finished = now
        if replica.state == READY:
            self._refill(replica)
        elif replica.state == TERMINATING:
            if replica.queue:
                self._serve(replica, replica.queue.popleft())
            elif replica.running == 0:
                self._gone(replica)
        self._check_done()

    def _refill(self, replica: Replica) -> None:
        """A ready replica has a free slot: the next request for it, or it joins the free ones."""
        if self.single:
            if self.queue:
                target = replica if self.slots == 1 else self._pick()
                if target is not None:
                    self._serve(target, self.queue.popleft())
                    return
        elif replica.queue:
            self._serve(replica, replica.queue.popleft())
            return
        if replica.running == 0:
            replica.idle_since = self.env.now
            if self.slots == 1:
                self.recent[replica] = None

    def _check_done(self) -> None:
        if self.arrivals_done and self.outstanding == 0 and not self.done.triggered:
            self.done.succeed()

    # -- replicas -----------------------------------------------------------------------------------

    def _new_replica(self) -> Replica:
        replica = Replica(next(self.numbers), self.env.now)
        self.all_replicas.append(replica)
        self.alive += 1
        return replica

    def _start_replica(self) -> None:
        replica = self._new_replica()
        self.starting.append(replica)
        low, high = self.config.startup
        delay = low if high == low else self.rnd.uniform(low, high)
        loaded = self.env.timeout(delay)
        loaded.callbacks.append(lambda _event: self._loaded(replica))

    def _loaded(self, replica: Replica) -> None:
        if replica.state != STARTING:
            return  # removed while it was loading
        self.starting.remove(replica)
        self._make_ready(replica)

    def _make_ready(self, replica: Replica) -> None:
        replica.state = READY
        replica.ready_at = self.env.now
        replica.idle_since = self.env.now
        self.ready.append(replica)
        if self.single:
            while self.queue and replica.running < self.slots:
                self._serve(replica, self.queue.popleft())
            if replica.running == 0 and self.slots == 1:
                self.fresh.append(replica)
            return
        waiting, self.queue = self.queue, deque()
        for index in waiting:  # held while no pod was ready; each now goes to a random pod
            self._send(self.ready[self.rnd.randrange(len(self.ready))], index)
        if replica.running == 0 and self.slots == 1:
            self.fresh.append(replica)

    def _gone(self, replica: Replica) -> None:
        replica.state = GONE
        replica.gone = self.env.now
        self.alive -= 1

    def _stop(self, replica: Replica) -> None:
        if replica.state == STARTING:
            self.starting.remove(replica)
            self._gone(replica)
            return
        self.ready.remove(replica)
        self._unidle(replica)
        if replica.running == 0 and not replica.queue:
            self._gone(replica)
            return
        # Out of the endpoints, SIGTERM, a graceful drain: it finishes what it holds (with per-pod queues,
        # its own queue too; nothing is re-routed) and `_finish` lets it go when it is empty.
        replica.state = TERMINATING
        self.busy_removals.append(self.env.now)

    def victims(self, count: int) -> list[Replica]:
        if self.policy.removal == "idle-only":  # ours: the control loop's own rule
            idle = (r for r in self.ready if r.running == 0 and not r.queue)
            return pick_victims(count, self.starting, idle, lambda r: r.idle_since)
        ranked = sorted(self.starting, key=lambda r: (-r.started, -r.number))
        ranked += sorted(self.ready, key=lambda r: (-r.ready_at, -r.number))
        return ranked[:count]

    def remove(self, count: int) -> int:
        victims = self.victims(count)
        for replica in victims:
            self._stop(replica)
        return len(victims)

    # -- the autoscaler -----------------------------------------------------------------------------

    def idle_count(self) -> int:
        if self.slots == 1:
            return len(self.recent) + len(self.fresh)
        return sum(1 for r in self.ready if r.running == 0)

    def view(self) -> ClusterView:
        return ClusterView(
            time=self.env.now,
            queued=self.outstanding - self.running,
            running=self.running,
            ready=len(self.ready),
            starting=len(self.starting),
            idle=self.idle_count(),
            concurrency=self.concurrency,
        )

    def decide(self) -> None:
        view = self.view()
        desired = self.policy.desired(view)
        current = view.replicas
        if desired > current:
            for _ in range(desired - current):
                self._start_replica()
            self.events.append(ScaleEvent(view.time, current, desired))
        elif desired < current:
            removed = self.remove(current - desired)
            if removed:
                self.events.append(ScaleEvent(view.time, current, current - removed))

    def _controller(self, phase: float) -> Generator[simpy.Event, Any, None]:
        env = self.env
        interval = self.policy.interval
        if phase > 0:
            yield env.timeout(phase)
        for k in itertools.count(1):
            self.decide()
            # Ticks at exact multiples, so float drift never moves a window edge.
            yield env.timeout(max(0.0, phase + k * interval - env.now))

    def _sampler(self, step: int) -> Generator[simpy.Event, Any, None]:
        """Every second: the mean outstanding over it (Knative's buckets); every `step`: a timeline point."""
        env = self.env
        for second in itertools.count(1):
            yield env.timeout(second - env.now)
            self._account()
            self.concurrency.append(self.area - self.area_mark)
            self.area_mark = self.area
            if second % step == 0:
                self.timeline.t.append(env.now)
                self.timeline.replicas.append(self.alive)
                self.timeline.ready.append(len(self.ready))
                self.timeline.queued.append(self.outstanding - self.running)

    # -- running ------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        began = time.perf_counter()
        env = self.env
        duration = self.trace.duration
        step = self.config.timeline_step or max(1, round(duration / 1500))
        phase = self.config.phase
        if phase is None:
            phase = random.Random(f"{self.config.seed}:phase:{self.policy.name}").uniform(
                0, self.policy.interval
            )
        env.process(self._arrivals())
        env.process(self._controller(phase))
        env.process(self._sampler(step))
        env.run(until=duration)
        if not self.done.triggered:
            env.run(until=env.any_of([self.done, env.timeout(self.config.tail)]))
        end = max(duration, env.now)
        lifetimes = np.array(
            [(r.started, r.gone if r.state == GONE else end) for r in self.all_replicas], dtype=float
        ).reshape(-1, 2)
        return RunResult(
            policy=self.policy.name,
            trace=self.trace,
            config=self.config,
            end=end,
            start=self.start,
            finish=self.finish,
            rejected_mask=self.rejected,
            lifetimes=lifetimes,
            initial=self.initial,
            busy_removals=self.busy_removals,
            events=self.events,
            timeline=self.timeline,
            wall_seconds=time.perf_counter() - began,
        )


def simulate(
    trace: Trace,
    make_policy: Callable[[int, int, int], Autoscaler],
    config: SimConfig,
    min_replicas: int = 1,
    max_replicas: int = 10,
    initial: int | None = None,
) -> RunResult:
    """One run: `make_policy(min, max, initial)` builds the autoscaler knowing how many replicas start
    ready (the KPA starts in panic mode when that is more than one, as Knative's does). `initial`
    defaults to what the trace's first minutes need (`initial_replicas`)."""
    if initial is None:
        initial = initial_replicas(trace, min_replicas, max_replicas)
    return Simulation(trace, make_policy(min_replicas, max_replicas, initial), config, initial).run()
