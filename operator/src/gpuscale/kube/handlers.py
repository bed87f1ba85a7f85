"""The kopf operator: a GpuInferenceService becomes its Deployments, Services and RBAC, and a control loop
per service scales the model Deployment by the gateway's queue.

Run with ``gpuscale operator`` (or ``kopf run -m gpuscale.kube.handlers``). Handlers stay thin: the
objects come from ``objects.build_*``, decisions from the policy, and what must survive a restart
(the policy's windows, the last scale time) lives in the CR's status.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf

from gpuscale import spec as specs
from gpuscale.control.gateway_admin import GatewayAdmin
from gpuscale.control.loop import ControlLoop, TickReport
from gpuscale.control.policy import PolicyState
from gpuscale.kube import conditions, metrics
from gpuscale.kube.backend import KubeBackend, serving_ip
from gpuscale.kube.cache import Caches, NamespaceCache
from gpuscale.kube.client import Credentials, KubeClient, KubeError, object_path, path
from gpuscale.kube.conditions import Condition
from gpuscale.kube.drift import drift_patch
from gpuscale.kube.health import readiness, unschedulable
from gpuscale.kube.objects import (
    DEFAULT_GATEWAY_IMAGE,
    GATEWAY_ADMIN_PORT,
    TEMPLATE_KEYS,
    TemplateError,
    build_gateway_deployment,
    build_gateway_rbac,
    build_owned,
    label_selector,
    model_name,
    owner_reference,
    unknown_template_keys,
)
from gpuscale.kube.podload import PodLoad

GROUP, VERSION, PLURAL = specs.API_GROUP, specs.VERSION, specs.PLURAL
log = logging.getLogger("gpuscale.operator")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(body: Mapping[str, Any]) -> specs.GpuInferenceService:
    """The CR as the typed service; ManifestError names each problem (the schema let it through)."""
    meta = body["metadata"]
    document = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default")},
        "spec": dict(body.get("spec") or {}),
    }
    source = f"{meta.get('namespace')}/{meta['name']}"
    service = specs.parse_service(document, source)
    try:
        # Template overrides are free-form in the schema; building the objects is what checks their shapes.
        build_owned(service, owner_reference(body), 0)
    except TemplateError as exc:
        raise specs.ManifestError(source, [str(exc)]) from None
    return service


# --- start-up: credentials shared by kopf and our own client ---------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        _credentials.append(Credentials.from_kopf(info))
    return info


_credentials: list[Credentials] = []


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own prefix for kopf's bookkeeping; status is ours alone (the CRD prunes what it does not declare).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gpuscale.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="gpuscale.io")
    settings.persistence.finalizer = "gpuscale.io/operator"
    settings.watching.server_timeout = 300
    memo.gateway_image = memo.get("gateway_image", DEFAULT_GATEWAY_IMAGE)
    # Set on the operator's memo before any service's copy is made, so every loop shares it.
    memo.caches = Caches(credentials)
    metrics.serve(memo.get("metrics_port"))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    client = memo.get("kube")
    if client is not None:
        await client.aclose()


def credentials() -> Credentials:
    """The operator's login (kopf logs in after the start-up handlers run)."""
    if not _credentials:
        raise kopf.TemporaryError("not logged in to the API yet", delay=1)
    return _credentials[-1]


def kube(memo: kopf.Memo) -> KubeClient:
    """The service's API client, made on first use (kopf logs in after start-up handlers run). kopf gives
    each resource its own copy of the memo, so each service has one; the daemon closes it."""
    if memo.get("kube") is None:
        memo.kube = KubeClient(credentials())
    client = memo.kube
    assert isinstance(client, KubeClient)
    return client


# --- reconcile: the owned objects ------------------------------------------------------------------------


async def apply(client: KubeClient, desired: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """Create the object or patch what drifted; returns what was done (created, patched, unchanged)."""
    try:
        live = await client.get(object_path(desired))
    except KubeError as exc:
        if not exc.not_found:
            raise
        await client.create(object_path(desired, with_name=False), desired)
        return "created"
    patch = drift_patch(live, desired, ignore)
    if not patch:
        return "unchanged"
    await client.patch(object_path(desired), patch)
    return "patched"


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    started = time.monotonic()
    generation = int(meta.get("generation") or 0)
    found = list(status.get("conditions") or [])
    try:
        service = parse(body)
    except specs.ManifestError as exc:
        message = "; ".join(exc.problems)
        patch.status["conditions"] = conditions.upsert(
            found, "Ready", False, "InvalidSpec", message, generation, now_rfc3339()
        )
        patch.status["observedGeneration"] = generation
        kopf.warn(body, reason="InvalidSpec", message=message)
        metrics.RECONCILES.labels("invalid").inc()
        return  # nothing to retry until the spec changes
    ignored = unknown_template_keys(service)
    if ignored:
        # Accepted (the schema keeps template free-form) but unused: a typo there would otherwise go unseen.
        kopf.warn(
            body,
            reason="IgnoredTemplateKeys",
            message=f"spec.template: {', '.join(ignored)} not used; the keys read are "
            + ", ".join(sorted(TEMPLATE_KEYS)),
        )
    client = kube(memo)
    autoscaling = service.spec.autoscaling
    # The loop owns the model Deployment's replicas while autoscaling is on; with it off, spec.replicas
    # (what `kubectl scale gis` writes through /scale) does.
    replicas = (
        service.spec.replicas
        if not autoscaling.enabled
        else int(status.get("desiredReplicas", autoscaling.min_replicas))
    )
    done: dict[str, str] = {}
    for obj in build_owned(service, owner_reference(body), replicas, memo.gateway_image):
        is_model = obj["kind"] == "Deployment" and obj["metadata"]["name"] == model_name(service)
        ignore = ("spec.replicas",) if is_model and autoscaling.enabled else ()
        done[f"{obj['kind']}/{obj['metadata']['name']}"] = await apply(client, obj, ignore)
    if not service.spec.gateway.enabled:
        await remove_gateway(client, service)
    changed = {k: v for k, v in done.items() if v != "unchanged"}
    if changed:
        kopf.info(body, reason="Applied", message=", ".join(f"{k} {v}" for k, v in changed.items()))
    patch.status["observedGeneration"] = generation
    patch.status["selector"] = label_selector(service)
    # The daemon owns the conditions of a valid spec, InvalidSpec's way out included (its first tick of a
    # new generation rewrites them all). Writing them here too would race it: kopf can run this handler
    # late, on a snapshot older than the daemon's last write, and a merge patch replaces the whole list.
    metrics.RECONCILES.labels("ok").inc()
    metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


async def remove_gateway(client: KubeClient, service: specs.GpuInferenceService) -> None:
    """Turning the gateway off leaves its objects behind (their owner lives on): remove them, the
    Deployment first (the gateway's Service is `<name>`, which the direct Service takes over)."""
    gateway = [*build_gateway_rbac(service, {}), build_gateway_deployment(service, {})]
    for obj in reversed(gateway):
        with contextlib.suppress(KubeError):
            await client.delete(object_path(obj))


# --- the control loop, one per service -------------------------------------------------------------------


async def gateway_admin_url(client: KubeClient, service: specs.GpuInferenceService) -> str | None:
    """The admin port of a ready gateway pod: reachable from the operator on a cluster and here alike."""
    pods = await client.list(
        path("v1", "pods", service.metadata.namespace), label_selector(service, "gateway")
    )
    for pod in pods:
        if (ip := serving_ip(pod)) is not None:
            return f"http://{ip}:{GATEWAY_ADMIN_PORT}"
    return None


def status_from(report: TickReport | None, backend: KubeBackend, state: PolicyState) -> dict[str, Any]:
    """The replica counts; after a tick, also its decision, the load it saw and the policy's ``state``."""
    ready = sum(1 for r in backend.replicas() if r.phase == "ready")
    out: dict[str, Any] = {"replicas": len(backend.pods), "readyReplicas": ready}
    if report is not None:
        out["desiredReplicas"] = report.decision.desired
        if report.observation.queued is not None:
            out["queueDepth"] = report.observation.queued
        if report.observation.running is not None:
            out["inFlight"] = report.observation.running
        out["autoscalerState"] = state.to_dict()
    return out


def scaling_active(report: TickReport, observing: str, unread: str) -> tuple[bool, str, str]:
    """The ScalingActive condition's status, reason and message after a tick: ``observing`` with the
    decision's reason, or NoLoadData with ``unread`` (why there was no load to go by)."""
    if report.observation.queued is None:
        return False, "NoLoadData", unread
    return True, observing, report.decision.reason


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def autoscale(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """The service's control loop, with its own gateway client (one shared pool for 200 gateways would
    keep few connections alive and scan itself on every request); both clients close when it ends."""
    namespace = body.meta.get("namespace") or ""
    caches: Caches = memo.caches
    cache = caches.acquire(namespace)
    try:
        async with httpx.AsyncClient(timeout=1.0, verify=_PLAIN_HTTP) as http:
            await _autoscale(stopped, body, memo, logger, http, cache)
    finally:
        await caches.release(namespace)
        metrics.forget(namespace, body.meta.get("name") or "")
        client = memo.get("kube")
        if client is not None:
            memo.kube = None
            await client.aclose()


# The gateway's admin port is plain HTTP: an empty TLS context spares each client loading the CA bundle.
_PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@dataclass
class StatusWriter:
    """Writes a service's status only when it says something new, and remembers the conditions it wrote.
    kopf's body can lag behind our own writes by a few events under load; upserting into that older list
    would move lastTransitionTime and send the same status again."""

    url: str
    last: dict[str, Any] = field(default_factory=dict)  # the essence of the last status written
    written: list[Condition] | None = None

    def conditions(self, body: kopf.Body) -> list[Condition]:
        return self.written if self.written is not None else list(body.status.get("conditions") or [])

    async def write(self, client: KubeClient, status: dict[str, Any], logger: Any) -> None:
        essence = conditions.status_essence(status)
        if essence == self.last:
            return
        try:
            await client.patch(self.url, {"status": status})
        except KubeError as exc:
            logger.warning(f"status not written: {exc}")
            return
        self.last, self.written = essence, status.get("conditions")


def new_loop(
    service: specs.GpuInferenceService,
    client: KubeClient,
    http: httpx.AsyncClient,
    saved: Mapping[str, Any],
    cache: NamespaceCache | None = None,
) -> tuple[KubeBackend, ControlLoop]:
    """The service's backend and control loop for one generation of its spec, reading the load from the
    gateway, or from the pods when there is none; ``saved`` is the policy's state from the CR's status."""
    backend = KubeBackend(
        client, service.metadata.namespace, model_name(service), label_selector(service), cache=cache
    )
    source = GatewayAdmin("http://unset", http)  # the address is looked up before each tick
    if not service.spec.gateway.enabled:
        names = service.spec.metrics
        source = PodLoad(http, names.queue_depth, names.in_flight, service.spec.slots_per_replica)
    # Wall-clock time: the policy's windows are saved in status and read back by the next operator.
    loop = ControlLoop(service.spec.autoscaling, backend, source, clock=time.time)
    if saved:
        loop.state = PolicyState.from_dict(dict(saved))  # survives an operator restart: no flap
    return backend, loop


async def _autoscale(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: Any,
    http: httpx.AsyncClient,
    cache: NamespaceCache,
) -> None:
    """Observe, decide and act every tick; write status only when it changed (one write per tick at most)."""
    writer: StatusWriter | None = None
    admin_url: str | None = None
    current: tuple[specs.GpuInferenceService, KubeBackend, ControlLoop] | None = None
    seen_generation = -1
    while not stopped:
        started = time.monotonic()
        generation = int(body.meta.get("generation") or 0)
        if current is None or generation != seen_generation:
            # The spec moves only with the generation: parse (and check) it once per generation.
            try:
                service = parse(body)
            except specs.ManifestError:
                await stopped.wait(2.0)  # the reconcile handler reports it; wait for a fixed spec
                continue
            seen_generation = generation
            # A new generation starts from the conditions in the body (reconcile's InvalidSpec, say).
            writer = StatusWriter(
                path(specs.API_VERSION, PLURAL, service.metadata.namespace, service.name, "status")
            )
            saved = body.status.get("autoscalerState") or {}
            backend, loop = new_loop(service, kube(memo), http, saved, cache)
            current = service, backend, loop
        service, backend, loop = current
        assert writer is not None  # made with `current`
        client = backend.client
        spec = service.spec.autoscaling
        report: TickReport | None = None
        found = writer.conditions(body)
        now = now_rfc3339()
        try:
            await backend.refresh()
            if not spec.enabled:
                active = (False, "Disabled", "autoscaling.enabled is false")
            elif isinstance(loop.gateway, PodLoad):
                loop.gateway.pods = {
                    p["metadata"]["name"]: f"http://{ip}:{service.spec.port}"
                    for p in backend.pods
                    if (ip := serving_ip(p)) is not None
                }
                report = await loop.tick()
                active = scaling_active(
                    report, "ObservingPods", "the pods' load gauges could not be read this tick"
                )
            else:
                # Look the gateway pod up again only when it stopped answering (restarted, moved).
                admin_url = admin_url or await gateway_admin_url(client, service)
                if admin_url is None:
                    active = (False, "NoGateway", "no ready gateway pod to read the queue from")
                else:
                    loop.gateway.admin_url = admin_url
                    report = await loop.tick()
                    if report.observation.queued is None:
                        admin_url = None
                    active = scaling_active(report, "Observing", "the gateway did not answer this tick")
            found = conditions.upsert(found, "ScalingActive", *active, generation, now)
        except (KubeError, httpx.HTTPError, OSError) as exc:
            if isinstance(exc, KubeError) and exc.not_found:
                logger.debug(f"nothing to scale yet: {exc}")  # the daemon may start before reconcile ends
            else:
                metrics.SCRAPE_ERRORS.inc()
                logger.warning(f"tick failed: {exc}")
                # On the object too: a new service would otherwise show no condition at all.
                failed = f"the control loop could not read the API or the gateway: {exc}"
                found = conditions.upsert(
                    found, "ScalingActive", False, "TickFailed", failed, generation, now
                )
                await writer.write(client, {"conditions": found}, logger)
            await stopped.wait(spec.tick_seconds)
            continue
        status = status_from(report, backend, loop.state)
        ready = status["readyReplicas"]
        wanted = report.decision.desired if report is not None else backend.wanted
        metrics.set_replicas(service.metadata.namespace, service.name, wanted, ready)
        blocked = unschedulable(backend.pods)
        found = conditions.upsert(
            found,
            "PodsSchedulable",
            blocked is None,
            "Unschedulable" if blocked else "Scheduled",
            blocked or "every pod found a node",
            generation,
            now,
        )
        health = readiness(backend.pods, backend.live_deployment, ready, wanted)
        before = conditions.get(found, "Ready") or {}
        found = conditions.upsert(
            found, "Ready", health.ready, health.reason, health.message, generation, now
        )
        if not health.ready and health.reason not in ("Starting", before.get("reason")):
            kopf.warn(body, reason=health.reason, message=health.message)  # once, when it starts
        status["conditions"] = found
        if report is not None and report.scaled:
            status["lastScaleTime"] = now
            metrics.DECISIONS.labels("up" if report.started else "down").inc()
            kind = "ScaledUp" if report.started else "ScaledDown"
            kopf.info(
                body, reason=kind, message=f"{report.decision.desired} replicas: {report.decision.reason}"
            )
        await writer.write(client, status, logger)
        metrics.TICK_SECONDS.observe(time.monotonic() - started)
        await stopped.wait(max(0.0, spec.tick_seconds - (time.monotonic() - started)))
