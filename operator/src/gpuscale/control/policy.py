"""The scaling policy: timestamped load observations in, desired replicas and a reason out.

Pure: no I/O, no clock (time is in the observation), no hidden state (the state goes in and comes out,
so the operator can keep it in the CR and resume after a restart).

How it decides, per tick (docs/autoscaling.md says why each rule is there):
1. No load data → hold. A failed scrape never removes a replica.
2. `want` = the higher of the load averaged over the burst window (fast to rise) and the stable
   window's load (slow to fall), divided by `targetPerReplica`, rounded up. The stable window's load
   is the higher of its mean and its 90th percentile: random arrivals need room above their mean
   (at the mean, one slot per replica runs at 100% and a queue forms), and the percentile sizes
   that room by how much the load really varies, so a steady client sending one request after
   another still gets exactly one replica. With one slot per replica the target is 1.0: one request
   outstanding is one replica, not two as at a 0.7 utilisation target.
3. Requests waiting, at least one per ready replica, and no replica idle → also at least what is
   outstanding now (`burst`): a step up is met on its first tick, not after an average has caught
   up. Fewer waiting than replicas is a queue the ready ones clear within about one request's time,
   faster than any new replica starts: the averages, not the burst rule, answer that.
4. Replicas that are starting count as capacity on the way, so a slow start is not scaled up twice.
5. Below the current count: only after `want` has stayed lower for `scaleDownDelaySeconds` (and that
   long after the last scale-up), at most dividing by `maxScaleDownRate` per decision, and to zero
   only after `scaleToZeroAfterSeconds` without a request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from gpuscale.spec import AutoscalingSpec

_EPSILON = 1e-9  # keeps 3.0000000001 from rounding up to 4


@dataclass(frozen=True)
class Observation:
    """The load at one moment. `queued`/`running` are None when they could not be read."""

    time: float
    queued: float | None
    running: float | None
    ready: int  # replicas serving
    starting: int = 0  # replicas started and not yet ready
    idle: int = 0  # ready replicas with nothing outstanding

    @property
    def replicas(self) -> int:
        return self.ready + self.starting

    @property
    def outstanding(self) -> float | None:
        if self.queued is None or self.running is None:
            return None
        return self.queued + self.running


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks; JSON-able, so it can live in the CR's status."""

    samples: tuple[tuple[float, float], ...] = ()  # (time, outstanding), newest last, stable window long
    last_scale_up: float | None = None
    below_since: float | None = None  # since when `want` has been below the replica count
    last_busy: float | None = None  # last time anything was outstanding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyState:
        samples = tuple((float(t), float(v)) for t, v in data.get("samples", ()))
        known = {k: data.get(k) for k in ("last_scale_up", "below_since", "last_busy")}
        return cls(samples=samples, **known)


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    kind: str  # "up", "down", "hold", "wait" (a lower count is wanted; the delay runs), "no-data", "fixed"
    state: PolicyState


def mean_since(samples: Iterable[tuple[float, float]], since: float) -> float | None:
    values = [v for t, v in samples if t > since]
    return sum(values) / len(values) if values else None


# The stable window's load is at least this quantile of its samples (nearest rank). Chosen with the
# simulator (`gpuscale bench`, docs/policy-comparison.md): lower quantiles leave too little room and
# the count saws up and down with each random queue; higher ones pay for room that is rarely used.
STABLE_QUANTILE = 0.9


def quantile_since(samples: Iterable[tuple[float, float]], since: float, q: float) -> float | None:
    values = sorted(v for t, v in samples if t > since)
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def replicas_for(load: float, target: float) -> int:
    return max(0, math.ceil(load / target - _EPSILON))


def clamp(value: int, spec: AutoscalingSpec) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, value))


def _n(count: int) -> str:
    return f"{count} replica" + ("" if count == 1 else "s")


def decide(spec: AutoscalingSpec, obs: Observation, state: PolicyState, fixed: int | None = None) -> Decision:
    """One decision. With autoscaling off the caller passes `fixed`, the count the user set."""
    now = obs.time
    current = obs.replicas
    if fixed is not None:
        return Decision(fixed, f"autoscaling off: {_n(fixed)} as set", "fixed", state)

    outstanding = obs.outstanding
    if outstanding is None:
        # Bounds still hold (a lowered maxReplicas applies at once); the load cannot lower anything.
        desired = clamp(current, spec)
        reason = f"no load data; holding at {_n(desired)}"
        return Decision(desired, reason, "no-data", replace(state, below_since=None))

    horizon = now - spec.stable_window_seconds
    samples = (*(s for s in state.samples if horizon < s[0] < now), (now, outstanding))
    last_busy = now if outstanding > 0 else state.last_busy
    burst_avg = mean_since(samples, now - spec.burst_window_seconds) or 0.0
    stable_avg = max(
        mean_since(samples, horizon) or 0.0, quantile_since(samples, horizon, STABLE_QUANTILE) or 0.0
    )
    target = spec.target_per_replica
    want = max(replicas_for(burst_avg, target), replicas_for(stable_avg, target))
    burst = obs.queued is not None and obs.queued > 0 and obs.queued >= obs.ready and obs.idle == 0
    if burst:
        want = max(want, replicas_for(outstanding, target))
    by_load = want
    want = clamp(want, spec)
    state = replace(state, samples=samples, last_busy=last_busy)
    load = f"{outstanding:g} outstanding ({obs.queued:g} queued, {obs.running:g} running)"

    if want > current:
        if by_load <= current:
            why = f"minReplicas {spec.min_replicas}"
        elif burst:
            why = f"{obs.queued:g} waiting and no replica idle: {load}"
        else:
            why = f"load averaged {burst_avg:.2f} over {spec.burst_window_seconds:g} s"
        reason = f"{why}: {current} → {want}"
        if want == spec.max_replicas and replicas_for(outstanding, target) > want:
            reason += f" (maxReplicas {spec.max_replicas})"
        return Decision(want, reason, "up", replace(state, last_scale_up=now, below_since=None))

    if want == current:
        reason = f"steady at {_n(current)}: {load}, {stable_avg:.2f} over {spec.stable_window_seconds:g} s"
        return Decision(current, reason, "hold", replace(state, below_since=None))

    if current > spec.max_replicas:
        reason = f"{current} is above maxReplicas {spec.max_replicas}: {current} → {spec.max_replicas}"
        return Decision(spec.max_replicas, reason, "down", state)

    below_since = state.below_since if state.below_since is not None else now
    state = replace(state, below_since=below_since)
    delay = spec.scale_down_delay_seconds
    waited = now - below_since
    since_up = math.inf if state.last_scale_up is None else now - state.last_scale_up
    if waited < delay or since_up < delay:
        left = delay - min(waited, since_up)
        reason = (
            f"load {stable_avg:.2f} over {spec.stable_window_seconds:g} s wants {_n(want)}; "
            f"holding {current} for {left:.0f} s more (scaleDownDelaySeconds {delay:g})"
        )
        return Decision(current, reason, "wait", state)

    # From one replica the rate allows zero; whether zero is allowed is the idle rule's to say.
    floor = math.ceil(current / spec.max_scale_down_rate - _EPSILON) if current > 1 else 0
    desired = max(want, floor)
    idle_for = math.inf if last_busy is None else now - last_busy
    if desired == 0 and idle_for < spec.scale_to_zero_after_seconds:
        # Only reached from one replica: from more, the rate's floor is at least one.
        left = spec.scale_to_zero_after_seconds - idle_for
        reason = (
            f"idle {idle_for:.0f} s: to zero after {spec.scale_to_zero_after_seconds:g} s without a "
            f"request ({left:.0f} s more)"
        )
        return Decision(1, reason, "wait", state)
    if desired == 0:
        reason = f"no request for {spec.scale_to_zero_after_seconds:g} s or more: 1 → 0"
    else:
        reason = (
            f"load {stable_avg:.2f} over {spec.stable_window_seconds:g} s, below {current} for "
            f"{waited:.0f} s: {current} → {desired}"
        )
        if desired > want:
            reason += f" (at most ÷{spec.max_scale_down_rate:g} per step)"
    return Decision(desired, reason, "down", state)
