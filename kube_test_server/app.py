"""The HTTP face of the store: the Kubernetes REST paths, watch streams, evidence and injected faults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kube_test_server import patches, resources, tables
from kube_test_server.errors import ApiError
from kube_test_server.resources import ResourceType
from kube_test_server.selectors import Selection, watch_event_type
from kube_test_server.store import Change, DeleteOptions, Obj, Store, meta

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "kube-test-server",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


RETURNS_DELETED = {("", "pods"), ("", "services"), ("", "serviceaccounts")}


@dataclass(frozen=True)
class Request:
    """What a request did, in RBAC's terms: the evidence an operator's Role is derived from."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str = ""


@dataclass
class Fault:
    """Answer matching requests with ``status`` instead of serving them, ``times`` times (-1: always)."""

    status: int
    method: str | None = None
    path: str = ""  # a regular expression searched in the path
    times: int = 1
    reason: str = ""

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None


_REASONS = {
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class ApiState:
    store: Store
    address: str = "127.0.0.1:0"
    bookmark_interval: float = 1.0
    evidence: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Set to drop every open watch stream; each stream makes its own event on start.
    watch_drops: list[asyncio.Event] = field(default_factory=list)
    clock: Callable[[], float] = time.time


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _error(error: ApiError) -> web.Response:
    return _json(error.status(), error.code)


@dataclass(frozen=True)
class Target:
    rtype: ResourceType
    namespace: str | None
    name: str
    subresource: str


def _target(store: Store, group: str, version: str, rest: list[str]) -> Target:
    namespace: str | None = None
    rtype: ResourceType | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        inner = store.registry.find(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest, rtype = rest[1], rest[2:], inner
    if not rest or len(rest) > 3:
        raise ApiError.no_such_path()
    rtype = rtype or store.registry.find(group, version, rest[0])
    if rtype is None:
        raise ApiError.no_such_path()
    return Target(rtype, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


def _verb(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        return "get" if target.name else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _selection(target: Target, query: Any) -> Selection:
    rtype = target.rtype
    return Selection.from_query(
        query.get("labelSelector"),
        query.get("fieldSelector"),
        rtype.plural,
        rtype.selectable if rtype.custom else None,
        group=rtype.group,
        custom=rtype.custom,
        cluster_scoped=not rtype.namespaced,
    )


def _list_body(state: ApiState, target: Target, items: list[Obj], query: Any) -> Obj:
    """A List with limit/continue paging; built-in lists carry no apiVersion/kind on items."""
    start = 0
    token = query.get("continue")
    if token:
        try:
            start = int(json.loads(base64.b64decode(token))["start"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError.bad_request(f"continue key is not valid: {exc}") from exc
    metadata: Obj = {"resourceVersion": str(state.store.revision)}
    limit = int(query.get("limit") or 0)
    page = items[start:]
    if limit and len(page) > limit:
        page = page[:limit]
        metadata["continue"] = base64.b64encode(json.dumps({"start": start + limit}).encode()).decode()
        metadata["remainingItemCount"] = len(items) - start - limit
    if not target.rtype.custom:
        page = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in page]
    return {
        "kind": f"{target.rtype.kind}List",
        "apiVersion": target.rtype.api_version,
        "metadata": metadata,
        "items": page,
    }


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        if "yaml" in request.headers.get("Content-Type", ""):
            import yaml

            return yaml.safe_load(raw)
        raise ApiError.bad_request("the body of the request could not be decoded as JSON") from None


def _delete_options(body: Any, query: Any) -> DeleteOptions:
    body = body if isinstance(body, dict) else {}
    preconditions = body.get("preconditions") or {}
    grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
    propagation = query.get("propagationPolicy", body.get("propagationPolicy")) or "Background"
    if body.get("orphanDependents") is True:
        propagation = "Orphan"
    if propagation not in ("Background", "Foreground", "Orphan"):
        raise ApiError.bad_request(f'propagationPolicy: Unsupported value: "{propagation}"')
    return DeleteOptions(
        propagation,
        int(grace) if grace is not None else None,
        preconditions.get("uid"),
        preconditions.get("resourceVersion"),
        dry_run=query.get("dryRun") == "All",
    )


def _deleted_status(target: Target, obj: Obj) -> Obj:
    m = meta(obj)
    details = {"name": m.get("name"), "kind": target.rtype.plural, "uid": m.get("uid")}
    if target.rtype.group:
        details["group"] = target.rtype.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


async def _serve_object(request: web.Request, state: ApiState, target: Target) -> web.StreamResponse:
    store, query, method = state.store, request.query, request.method
    rtype, ns, name, sub = target.rtype, target.namespace, target.name, target.subresource
    served = {"": True, "status": rtype.status, "scale": rtype.scale is not None}
    if not served.get(sub):
        raise ApiError.no_such_path()
    dry = query.get("dryRun") == "All"
    if method == "GET":
        if sub == "scale":
            return _json(store.scale(rtype, ns, name))
        obj = store.get(rtype, ns, name)
        if _wants_table(request):
            return _json(tables.table(rtype, [obj], state.clock(), meta(obj)["resourceVersion"]))
        return _json(obj)
    if method == "PUT":
        body = await _body(request)
        if sub == "scale":
            return _json(store.write_scale(rtype, ns, name, body))
        return _json(store.replace(rtype, ns, name, body, subresource=sub, dry_run=dry))
    if method == "PATCH":
        kind = patches.patch_kind(request.headers.get("Content-Type", ""))
        if kind == "apply":
            raise ApiError.unsupported_media_type(
                "application/apply-patch+yaml (server-side apply is not served "
                "by the test server; see docs/kube-test-server.md)"
            )
        body = await _body(request)
        if sub == "scale":
            scale = store.scale(rtype, ns, name)
            patched = patches.merge_patch(scale, body) if kind != "json" else patches.json_patch(scale, body)
            return _json(store.write_scale(rtype, ns, name, patched))
        return _json(store.patch(rtype, ns, name, kind, body, subresource=sub, dry_run=dry))
    if method == "DELETE":
        obj, gone = store.delete(rtype, ns, name, _delete_options(await _body(request), query))
        if dry and gone:
            return _json(_deleted_status(target, obj))
        # Kinds whose registry returns the deleted object, and objects held by finalizers, come back as
        # themselves; everything else as a Status.
        if not gone or (rtype.group, rtype.plural) in RETURNS_DELETED:
            return _json(obj)
        return _json(_deleted_status(target, obj))
    raise ApiError.method_not_allowed(
        f"the server does not allow this method on the requested resource: {method}"
    )


async def _serve_collection(request: web.Request, state: ApiState, target: Target) -> web.StreamResponse:
    store, query, method = state.store, request.query, request.method
    rtype, ns = target.rtype, target.namespace
    if method == "GET":
        selection = _selection(target, query)
        if query.get("watch") in ("true", "1"):
            return await _watch(request, state, target, selection)
        items = store.list_objects(rtype, ns, selection.matches)
        if _wants_table(request):
            return _json(tables.table(rtype, items, state.clock(), str(store.revision)))
        return _json(_list_body(state, target, items, query))
    if method == "POST":
        # Creating needs the path of its scope: a namespaced kind under a namespace, and vice versa.
        if rtype.namespaced != bool(ns):
            raise ApiError.no_such_path()
        created = store.create(rtype, ns, await _body(request), dry_run=query.get("dryRun") == "All")
        return _json(created, 201)
    if method == "DELETE":
        options = _delete_options(await _body(request), query)
        match = _selection(target, query).matches
        gone = []
        for obj in store.list_objects(rtype, ns, match):
            with contextlib.suppress(ApiError):
                gone.append(store.delete(rtype, meta(obj).get("namespace"), meta(obj)["name"], options)[0])
        return _json(_list_body(state, target, gone, {}))
    raise ApiError.method_not_allowed(
        f"the server does not allow this method on the requested resource: {method}"
    )


# --- watch ---------------------------------------------------------------------------------------------


def _event(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _bookmark(target: Target, metadata: Obj) -> bytes:
    rtype = target.rtype
    return _event("BOOKMARK", {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata})


def _as_event(target: Target, change: Change, selection: Selection) -> tuple[str, Obj] | None:
    """The event a watcher sees: objects entering or leaving its selection become ADDED or DELETED."""
    rtype = target.rtype
    if (change.group, change.plural) != (rtype.group, rtype.plural):
        return None
    if rtype.namespaced and target.namespace and change.namespace != target.namespace:
        return None
    if change.type == "DELETED":
        kind = watch_event_type(selection, change.obj, None)
    else:
        kind = watch_event_type(selection, change.old, change.obj)
    if kind is None:
        return None
    return kind, {**change.obj, "apiVersion": rtype.api_version, "kind": rtype.kind}


async def _watch(
    request: web.Request, state: ApiState, target: Target, selection: Selection
) -> web.StreamResponse:
    store, query = state.store, request.query
    since = query.get("resourceVersion", "")
    send_initial = query.get("sendInitialEvents") == "true"
    bookmarks = query.get("allowWatchBookmarks") == "true"
    timeout = float(query.get("timeoutSeconds") or 0) or None
    queue: asyncio.Queue[Change] = asyncio.Queue()
    backlog: list[tuple[str, Obj]] = []
    expired: ApiError | None = None
    # Read what came before and subscribe in one step: the store runs on this loop, so nothing slips in.
    if send_initial or since in ("", "0"):
        backlog = [
            ("ADDED", o) for o in store.list_objects(target.rtype, target.namespace, selection.matches)
        ]
    else:
        try:
            version = int(since)
        except ValueError:
            raise ApiError.bad_request(
                f'resourceVersion: Invalid value: "{since}": must be an integer'
            ) from None
        try:
            for change in store.changes_since(version):
                event = _as_event(target, change, selection)
                if event is not None:
                    backlog.append(event)
        except ApiError as exc:
            expired = exc
    store.listeners.append(queue.put_nowait)
    dropped = asyncio.Event()
    state.watch_drops.append(dropped)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        if expired is not None:
            # The real server answers an expired version with 200 and one ERROR event carrying a 410.
            await response.write(_event("ERROR", expired.status()))
            return response
        for kind, obj in backlog:
            await response.write(_event(kind, obj))
        if send_initial:
            end = {
                "resourceVersion": str(store.revision),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }
            await response.write(_bookmark(target, end))
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            wait = state.bookmark_interval if bookmarks else 3600.0
            if deadline is not None:
                wait = min(wait, deadline - asyncio.get_running_loop().time())
                if wait <= 0:
                    return response
            getter = asyncio.ensure_future(queue.get())
            dropper = asyncio.ensure_future(dropped.wait())
            done, _ = await asyncio.wait({getter, dropper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            getter.cancel()
            dropper.cancel()
            if dropper in done:
                # A dropped stream ends without a clean end of the chunked body, as a broken connection does.
                if request.transport is not None:
                    request.transport.close()
                return response
            if getter in done:
                event = _as_event(target, getter.result(), selection)
                if event is not None:
                    await response.write(_event(*event))
            elif bookmarks and queue.empty():
                # Never a bookmark past an event still queued: a client would resume after it.
                await response.write(_bookmark(target, {"resourceVersion": str(store.revision)}))
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    finally:
        with contextlib.suppress(ValueError):
            store.listeners.remove(queue.put_nowait)
        with contextlib.suppress(ValueError):
            state.watch_drops.remove(dropped)


# --- routing -------------------------------------------------------------------------------------------


def _discovery(state: ApiState, parts: list[str]) -> Obj | None:
    registry = state.store.registry
    if parts == ["version"]:
        return VERSION
    if parts == ["api"]:
        return resources.core_versions(state.address)
    if parts == ["apis"]:
        return resources.group_list(registry)
    if len(parts) == 2 and parts[0] == "api":
        return resources.resource_list(registry, "", parts[1])
    if len(parts) == 2 and parts[0] == "apis":
        return resources.group(registry, parts[1])
    if len(parts) == 3 and parts[0] == "apis":
        return resources.resource_list(registry, parts[1], parts[2])
    if parts == ["openapi", "v3"]:
        return resources.openapi_root(registry)
    if parts[:3] == ["openapi", "v3", "api"] and len(parts) == 4:
        return resources.openapi_group_version(registry, "", parts[3])
    if parts[:3] == ["openapi", "v3", "apis"] and len(parts) == 5:
        return resources.openapi_group_version(registry, parts[3], parts[4])
    return None


def _evidence(method: str, target: Target, watch: bool) -> Request:
    return Request(
        _verb(method, target, watch),
        target.rtype.group,
        target.rtype.plural,
        target.subresource,
        target.namespace or "",
        target.name,
    )


def make_app(state: ApiState) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        parts = [p for p in path.split("/") if p]
        try:
            target = None
            resource_path = None
            if len(parts) >= 3 and parts[0] == "api":
                resource_path = ("", parts[1], parts[2:])
            elif len(parts) >= 4 and parts[0] == "apis":
                resource_path = (parts[1], parts[2], parts[3:])
            if resource_path is not None:
                target = _target(state.store, *resource_path)
                watch = request.query.get("watch") in ("true", "1")
                # Recorded before any injected fault: a request that failed still needed its permission.
                state.evidence.append(_evidence(request.method, target, watch))
            for fault in list(state.faults):
                if fault.matches(request.method, path):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            state.faults.remove(fault)
                    reason = fault.reason or _REASONS.get(fault.status, "InternalError")
                    return _error(ApiError(fault.status, reason, f"injected by the test: {reason}"))
            if parts in (["healthz"], ["livez"], ["readyz"]):
                return web.Response(text="ok")
            if request.method == "GET":
                found = _discovery(state, parts)
                if found is not None:
                    return _json(found)
            if target is None:
                raise ApiError.no_such_path()
            if target.name:
                return await _serve_object(request, state, target)
            return await _serve_collection(request, state, target)
        except ApiError as error:
            return _error(error)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
