"""List, then watch, forever: one kind of object in one namespace matching a label selector.

What a Kubernetes informer does, without a client library: list (in pages), then watch from the list's
resourceVersion with bookmarks, up to `timeoutSeconds`, then again from the last version seen. An
expired version (410), a dropped stream or an API error means listing again after a short backoff
(doubling, capped); it never gives up and never raises out of `run`. The gateway follows its pods with
it, and the operator its services' model pods and Deployments (the label selector is the server's to
apply, so neither sees objects it has no business with).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
MIN_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
LIST_PAGE = 500

Obj = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error (or an ERROR event)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Expired(ApiError):
    """410: the resourceVersion is too old to watch from; list again."""


class ListWatch:
    """Calls ``on_list`` with every matching object after each full list, and ``on_event`` with each
    watch event's type (ADDED, MODIFIED, DELETED) and object; ``on_failure`` before each retry. Callbacks
    run on the event loop, between reads, so they see the objects in the order the API changed them.

    Failures are logged here, as ``name: reason; listing again (meanwhile)``: once per new kind of
    failure rather than once per retry, and the next list that succeeds says so."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        path: str,
        selector: str,
        *,
        name: str,
        meanwhile: str,
        on_list: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
        on_failure: Callable[[], None] | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.client = client
        self.path = path
        self.selector = selector
        self.name = name
        self.meanwhile = meanwhile
        self.on_list = on_list
        self.on_event = on_event
        self.on_failure = on_failure
        self.watch_seconds = watch_seconds
        self._failing = ""  # the last failure logged, so a retry that fails alike is not logged again

    async def run(self) -> None:
        backoff = MIN_BACKOFF_SECONDS
        while True:
            try:
                version = await self._relist()
                heard = True
                while heard:
                    version, heard = await self._watch(version)
                    if heard:
                        backoff = MIN_BACKOFF_SECONDS
            except Expired:
                # Routine: the history moved on while the stream was down or this reader was slow.
                log.debug("%s: resourceVersion expired; listing again", self.path)
                continue
            except ApiError as exc:
                self._failed(f"the API answered {exc}", None)
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: a line that is not JSON
                self._failed(f"{type(exc).__name__}: {exc}", None)
            except Exception as exc:
                # An object shaped unlike any the API serves, or a bug in a callback: keep going.
                self._failed(f"{type(exc).__name__}: {exc}", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _failed(self, what: str, exc: Exception | None) -> None:
        if self.on_failure is not None:
            self.on_failure()
        if what != self._failing:
            self._failing = what
            log.warning("%s: %s; listing again (%s)", self.name, what, self.meanwhile, exc_info=exc)
        else:
            log.debug("%s: %s again", self.name, what)

    async def _get_json(self, params: dict[str, str]) -> Any:
        response = await self.client.get(self.path, params=params)
        if response.status_code != 200:
            raise api_error(response.status_code, response.content)
        return response.json()

    async def _relist(self) -> str:
        """Every matching object, to ``on_list``; the resourceVersion to watch from."""
        items: list[Obj] = []
        params = {"labelSelector": self.selector, "limit": str(LIST_PAGE)}
        while True:
            page = await self._get_json(params)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params = {**params, "continue": metadata["continue"]}
        self.on_list(items)
        if self._failing:
            log.info("%s: listed again, %d", self.name, len(items))
            self._failing = ""
        return str(metadata.get("resourceVersion") or "")

    async def _watch(self, version: str) -> tuple[str, bool]:
        """One watch stream until the server ends it: the version to resume from, and whether any line
        came (a stream that ends at once does not count as healthy)."""
        params = {
            "labelSelector": self.selector,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        # The server ends the stream after timeoutSeconds; a read that waits longer is a dead connection.
        timeout = httpx.Timeout(10.0, read=self.watch_seconds + 30.0)
        heard = False
        async with self.client.stream("GET", self.path, params=params, timeout=timeout) as response:
            if response.status_code != 200:
                raise api_error(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise status_error(obj)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(kind, obj)
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                heard = True
        return version, heard


def status_error(status: Mapping[str, Any]) -> ApiError:
    code = int(status.get("code") or 500)
    message = str(status.get("message") or status.get("reason") or "unknown error")
    return Expired(code, message) if code == 410 else ApiError(code, message)


def api_error(code: int, body: bytes) -> ApiError:
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return status_error({**status, "code": status.get("code") or code})
    text = body.decode("utf-8", "replace").strip()[:200]
    return Expired(code, text) if code == 410 else ApiError(code, text or "no body")
