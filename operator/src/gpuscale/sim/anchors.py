"""The autoscalers ours is measured against, re-implemented from their published algorithms, with their
defaults. Each is pure: time comes in the view, state stays in the object.

What all three see: the service's outstanding requests (queued + running). With one slot per pod that is
the one load figure that means the same to each of them; what each does with it is its own algorithm.
They scale a Deployment, so when they lower the count the ReplicaSet removes pods by its own ranking,
busy or not (`removal = "replicaset"`; see `gpuscale.sim.model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuscale.sim.policies import ClusterView, Removal

_TICK_SLACK = 1e-6  # simulated ticks are exact multiples; keep float noise from moving a window edge


@dataclass(frozen=True)
class ScalingPolicy:
    """One `HPAScalingPolicy`: `kind` "Pods" (add/remove `value` pods) or "Percent", per `period` s."""

    kind: str
    value: float
    period: float


# `HorizontalPodAutoscalerBehavior` defaults (autoscaling/v2), from the Kubernetes documentation
# https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#default-behavior
HPA_SCALE_UP = (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15))
HPA_SCALE_DOWN = (ScalingPolicy("Percent", 100, 15),)


class HPA:
    """The Kubernetes HorizontalPodAutoscaler (autoscaling/v2), scaling on the service's outstanding
    requests as an Object metric on the gateway (or an External one) with a target `averageValue`.

    Source: https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ (algorithm
    details, default behavior) and kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go
    (`reconcileAutoscaler`, `stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
    `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`) and
    replica_calculator.go (`GetObjectPerPodMetricReplicas`, `GetExternalPerPodMetricReplicas`).

    - every `sync` (15 s, `--horizontal-pod-autoscaler-sync-period`): proposal =
      ceil(metric / target) unless |1 - metric / (target x status.replicas)| <= `tolerance` (0.1,
      `--horizontal-pod-autoscaler-tolerance`), in which case the current count;
    - stabilisation: a proposal below the count becomes the highest proposal of the last 300 s
      (`scaleDown.stabilizationWindowSeconds`); scale-up has no window (0 s);
    - rate: up by at most max(+100 %, +4 pods) per 15 s, down by up to 100 % per 15 s (the default
      policies, `selectPolicy: Max`), counting the changes already made within each period;
    - bounds `minReplicas`/`maxReplicas`; a target scaled to 0 by someone else (KEDA) is left alone.

    Target: 1 outstanding request per pod (`averageValue: 1`). With one request on the GPU at a time,
    one outstanding request is one busy pod, so 1 asks for exactly the pods the work needs; a lower
    target buys headroom with idle GPUs (KPA's 0.7 does that) and a higher one queues requests by design.
    This is the same target ours uses (`targetPerReplica` 1.0).

    Pods not ready: an Object/External `AverageValue` metric is divided by status.replicas, which counts
    pods that are still loading their model, and the proposal ceil(metric / target) does not look at
    readiness at all. With a Pods metric read from each pod, pods without a sample yet count as 0 on a
    scale-up (`missingPods`), which gives the same ceil(total / target); so readiness only moves the
    tolerance test, and we use status.replicas = the pods that exist and are not terminating. The metric is
    read fresh at each sync: no Prometheus scrape interval or adapter cache delays it (in a cluster those
    add 15-60 s, so this HPA is faster than a real one).
    """

    removal: Removal = "replicaset"

    def __init__(
        self,
        min_replicas: int = 1,
        max_replicas: int = 10,
        *,
        target: float = 1.0,
        tolerance: float = 0.1,
        sync: float = 15.0,
        scale_down_window: float = 300.0,
        scale_up_window: float = 0.0,
        scale_up: tuple[ScalingPolicy, ...] = HPA_SCALE_UP,
        scale_down: tuple[ScalingPolicy, ...] = HPA_SCALE_DOWN,
        name: str = "HPA",
    ) -> None:
        self.name = name
        self.interval = sync
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.target = target
        self.tolerance = tolerance
        self.scale_down_window = scale_down_window
        self.scale_up_window = scale_up_window
        self.scale_up = scale_up
        self.scale_down = scale_down
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []

    def metric(self, view: ClusterView) -> float:
        return float(view.outstanding)

    def proposal(self, metric: float, status_replicas: int) -> int:
        """`GetObjectPerPodMetricReplicas` / `GetExternalPerPodMetricReplicas`."""
        if status_replicas == 0:
            # Scaled to 0 (minReplicas 0), Go's ratio is +Inf with load (outside the tolerance: this) and
            # NaN without (NaN > tolerance is false: stay at 0, which this gives too). Python would raise.
            return math.ceil(metric / self.target)
        ratio = metric / (self.target * status_replicas)
        if abs(1.0 - ratio) > self.tolerance:
            return math.ceil(metric / self.target)
        return status_replicas

    def stabilize(self, now: float, current: int, desired: int) -> int:
        """`stabilizeRecommendationWithBehaviors`: the lowest recent proposal when going up (window 0 s by
        default, so the proposal itself), the highest of the window when going down; records `desired`."""
        if desired >= current:
            window, better = self.scale_up_window, min
        else:
            window, better = self.scale_down_window, max
        recommendation = desired
        cutoff = now - window + _TICK_SLACK
        for at, value in self.recommendations:
            if at > cutoff:
                recommendation = better(value, recommendation)
        oldest = now - max(self.scale_up_window, self.scale_down_window)
        self.recommendations = [(at, v) for at, v in self.recommendations if at >= oldest]
        self.recommendations.append((now, desired))
        return recommendation

    @staticmethod
    def _changed_within(now: float, period: float, events: list[tuple[float, int]]) -> int:
        """`getReplicasChangePerPeriod`: the changes made after now - period."""
        cutoff = now - period + _TICK_SLACK
        return sum(change for at, change in events if at > cutoff)

    def scale_up_limit(self, now: float, current: int) -> int:
        """`calculateScaleUpLimitWithScalingRules` with `selectPolicy: Max`."""
        limit = -math.inf
        for policy in self.scale_up:
            start = current - self._changed_within(now, policy.period, self.up_events)
            if policy.kind == "Pods":
                proposed = start + policy.value
            else:
                proposed = math.ceil(start * (1 + policy.value / 100))
            limit = max(limit, proposed)
        return int(limit)

    def scale_down_limit(self, now: float, current: int) -> int:
        """`calculateScaleDownLimitWithBehaviors` with `selectPolicy: Max` (the lowest proposal)."""
        limit = math.inf
        for policy in self.scale_down:
            start = current + self._changed_within(now, policy.period, self.down_events)
            if policy.kind == "Pods":
                proposed = start - policy.value
            else:
                proposed = int(start * (1 - policy.value / 100))
            limit = min(limit, proposed)
        return int(limit)

    def rate_limit(self, now: float, current: int, desired: int) -> int:
        """`convertDesiredReplicasWithBehaviorRate`."""
        if desired > current:
            allowed = min(self.max_replicas, max(self.scale_up_limit(now, current), current))
            return min(desired, allowed)
        if desired < current:
            allowed = max(self.min_replicas, min(self.scale_down_limit(now, current), current))
            return max(desired, allowed)
        return desired

    def reconcile(self, now: float, current: int, metric: float) -> int:
        """`reconcileAutoscaler` for one sync: the replica count to set."""
        if current == 0 and self.min_replicas != 0:
            return 0  # scaled to zero from outside (KEDA): the HPA does not act
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        else:
            proposal = self.proposal(metric, current)
            desired = self.rate_limit(now, current, self.stabilize(now, current, proposal))
        # `storeScaleEvent`: events older than the longest policy period count no more, so they go
        if desired > current:
            longest = max((p.period for p in self.scale_up), default=0.0)
            self.up_events = [e for e in self.up_events if e[0] > now - longest]
            self.up_events.append((now, desired - current))
        elif desired < current:
            longest = max((p.period for p in self.scale_down), default=0.0)
            self.down_events = [e for e in self.down_events if e[0] > now - longest]
            self.down_events.append((now, current - desired))
        return desired

    def desired(self, view: ClusterView) -> int:
        return self.reconcile(view.time, view.replicas, self.metric(view))


class KEDA:
    """KEDA's ScaledObject: the KEDA operator handles 0 <-> 1 and feeds an HPA (External metric,
    `AverageValue`) that handles 1 <-> N.

    Source: https://keda.sh/docs/2.16/reference/scaledobject-spec/ (pollingInterval, cooldownPeriod,
    minReplicaCount; "While scaling from 1 to N, on top of KEDA, the HPA will also poll regularly for
    metrics, based on --horizontal-pod-autoscaler-sync-period") and
    https://keda.sh/docs/2.16/concepts/scaling-deployments/#caching-metrics, and kedacore/keda
    pkg/scaling/executor/scale_scaledobjects.go (`RequestScale`).

    - every `pollingInterval` (30 s) the operator asks the trigger whether it is active (metric above
      `activationThreshold`, 0): active at 0 replicas → scale to max(minReplicaCount, 1); inactive for
      `cooldownPeriod` (300 s) since the last active poll, with `minReplicaCount` 0 → scale to 0;
    - between 1 and N, the HPA (min max(minReplicaCount, 1), defaults as in `HPA`) syncs every 15 s and
      asks KEDA's metrics server, which reads the trigger live, unless `useCachedMetrics` is set: then it
      gets the value of the last poll, up to 30 s old.

    Defaults here are KEDA's: minReplicaCount 0 (scale to zero), no metric cache. The trigger is the
    service's outstanding requests (a Prometheus query of queue depth + in flight) with `threshold: 1`.
    """

    removal: Removal = "replicaset"

    def __init__(
        self,
        min_replica_count: int = 0,
        max_replica_count: int = 100,
        *,
        threshold: float = 1.0,
        polling_interval: float = 30.0,
        cooldown_period: float = 300.0,
        activation_threshold: float = 0.0,
        use_cached_metrics: bool = False,
        sync: float = 15.0,
        name: str = "KEDA",
    ) -> None:
        self.name = name
        self.interval = math.gcd(int(sync), int(polling_interval)) or sync
        self.min_replica_count = min_replica_count
        self.polling_interval = polling_interval
        self.cooldown_period = cooldown_period
        self.activation_threshold = activation_threshold
        self.use_cached_metrics = use_cached_metrics
        self.sync = sync
        self.hpa = HPA(max(min_replica_count, 1), max_replica_count, target=threshold, sync=sync)
        self.last_poll: float | None = None
        self.last_active: float | None = None
        self.polled_value = 0.0
        self.last_sync: float | None = None

    def poll(self, now: float, current: int, metric: float) -> int:
        """The operator's poll (`RequestScale`): activation from zero and the cooldown to zero."""
        self.polled_value = metric
        if self.last_active is None:
            self.last_active = now  # the cooldown counts from the ScaledObject's creation at first
        active = metric > self.activation_threshold
        if active:
            self.last_active = now
            if current == 0:
                return max(self.min_replica_count, 1)
        elif current > 0 and self.min_replica_count == 0 and now - self.last_active >= self.cooldown_period:
            return 0
        return current

    def desired(self, view: ClusterView) -> int:
        now = view.time
        current = view.replicas
        metric = float(view.outstanding)
        if self.last_poll is None or now - self.last_poll >= self.polling_interval - _TICK_SLACK:
            self.last_poll = now
            polled = self.poll(now, current, metric)
            if polled != current:
                return polled
        if self.last_sync is None or now - self.last_sync >= self.sync - _TICK_SLACK:
            self.last_sync = now
            seen = self.polled_value if self.use_cached_metrics else metric
            return self.hpa.reconcile(now, current, seen)
        return current


class KPA:
    """Knative Serving's autoscaler (KPA) on concurrency, with `containerConcurrency: 1`.

    Source: https://knative.dev/docs/serving/autoscaling/kpa-specific/ and
    https://knative.dev/docs/serving/autoscaling/concurrency/ (defaults), and knative/serving
    pkg/autoscaler/scaling/autoscaler.go (`Scale`) and pkg/autoscaler/metrics/collector.go (windows over
    one-second buckets).

    - every 2 s (the autoscaler's tick): stable = mean concurrency over the last 60 s of one-second
      buckets (`stable-window`), panic = over the last 6 s (`panic-window-percentage` 10 %); with fewer
      buckets than a window, over those there are;
    - target per pod = containerConcurrency 1 x `container-concurrency-target-percentage` 70 % = 0.7;
      desired stable/panic = ceil(value / 0.7), kept within [floor(ready / `max-scale-down-rate` 2),
      ceil(ready x `max-scale-up-rate` 1000)], ready counted as at least 1;
    - panic starts when ceil(panic / 0.7) / ready >= `panic-threshold-percentage` 200 %, is extended
      on every tick still over it, and ends only a stable window (60 s) after the last such tick; in
      panic the count is the highest panic count seen and never goes down;
    - `scale-down-delay` 0 (none); created in panic holding the current count when it starts with more
      than one ready pod (as `newAutoscaler` does);
    - the result is bounded by min-scale/max-scale. With min-scale 0, the last pod goes only after
      `scale-to-zero-grace-period` (30 s) of wanting zero.
    """

    removal: Removal = "replicaset"

    def __init__(
        self,
        min_scale: int = 1,
        max_scale: int = 10,
        *,
        container_concurrency: float = 1.0,
        target_utilization: float = 0.7,
        stable_window: float = 60.0,
        panic_window_percentage: float = 10.0,
        panic_threshold_percentage: float = 200.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        tick: float = 2.0,
        scale_to_zero_grace: float = 30.0,
        initial_ready: int = 0,
        name: str = "Knative KPA",
    ) -> None:
        self.name = name
        self.interval = tick
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.target = container_concurrency * target_utilization
        self.stable_window = stable_window
        self.panic_window = stable_window * panic_window_percentage / 100
        self.panic_threshold = panic_threshold_percentage / 100
        self.max_scale_up_rate = max_scale_up_rate
        self.max_scale_down_rate = max_scale_down_rate
        self.scale_to_zero_grace = scale_to_zero_grace
        self.panic_time: float | None = 0.0 if initial_ready > 1 else None
        self.max_panic_pods = initial_ready
        self.wanted_zero_since: float | None = None

    @staticmethod
    def window_average(buckets: list[float] | tuple[float, ...], seconds: float) -> float | None:
        count = max(1, round(seconds))
        recent = buckets[-count:]
        return sum(recent) / len(recent) if recent else None

    def scale(self, now: float, ready_count: int, stable: float, panic: float) -> int:
        """`Scale`: the desired pod count before min/max-scale."""
        ready = max(1.0, float(ready_count))
        max_scale_up = math.ceil(self.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / self.max_scale_down_rate)
        dspc = math.ceil(stable / self.target)
        dppc = math.ceil(panic / self.target)
        desired_stable = int(min(max(dspc, max_scale_down), max_scale_up))
        desired_panic = int(min(max(dppc, max_scale_down), max_scale_up))
        over = dppc / ready >= self.panic_threshold
        if over:
            self.panic_time = now  # starts, or is extended
        elif self.panic_time is not None and self.panic_time + self.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0
        desired = desired_stable
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return desired

    def desired(self, view: ClusterView) -> int:
        buckets = list(view.concurrency[-max(1, round(self.stable_window)) :])
        stable = self.window_average(buckets, self.stable_window)
        panic = self.window_average(buckets, self.panic_window)
        if stable is None or panic is None:
            return max(self.min_scale, min(self.max_scale, view.replicas))  # no data yet: no decision
        want = self.scale(view.time, view.ready, stable, panic)
        want = max(self.min_scale, min(self.max_scale, want))
        if want == 0 and view.replicas > 0:
            if self.wanted_zero_since is None:
                self.wanted_zero_since = view.time
            if view.time - self.wanted_zero_since < self.scale_to_zero_grace:
                return view.replicas
        else:
            self.wanted_zero_since = None
        return want
