"""The replicas the gateway knows, their state and their load."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from gpuscale_gateway.settings import ReplicaSpec, check_url
from gpuscale_gateway.upstream import Pool

log = logging.getLogger("gpuscale_gateway")


class State(StrEnum):
    READY = "ready"  # takes new requests
    CORDONED = "cordoned"  # takes nothing new; what it holds finishes (scale-down, or a discovery said so)
    DOWN = "down"  # failed to connect or said it is unavailable; probed until its health path answers 200


class Replica:
    """One replica. `outstanding` counts queued-method requests sent to it and not yet answered."""

    __slots__ = (
        "down_reason",
        "idle_since",
        "last_finished",
        "name",
        "name_header",
        "outstanding",
        "pool",
        "served",
        "slots",
        "state",
        "url",
    )

    def __init__(self, name: str, url: str, slots: int, connect_timeout: float) -> None:
        self.name = name
        self.name_header = name.encode("ascii")
        self.slots = slots
        self.state = State.READY
        self.down_reason = ""
        self.outstanding = 0
        self.served = 0
        self.last_finished = 0.0  # monotonic time of its last answer; 0 = never
        self.idle_since = time.monotonic()
        self.url = url
        self.pool = self._pool(url, connect_timeout)

    @staticmethod
    def _pool(url: str, connect_timeout: float) -> Pool:
        parts = urlsplit(url)
        # check_url has made sure of both.
        assert parts.hostname is not None
        assert parts.port is not None
        return Pool(parts.hostname, parts.port, connect_timeout)

    def set_url(self, url: str, connect_timeout: float) -> None:
        if url != self.url:
            self.pool.close()  # connections in use finish their exchange, then close
            self.url = url
            self.pool = self._pool(url, connect_timeout)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """What the admin API reports: `idle_seconds` counts from when `outstanding` last became 0."""
        idle = self.outstanding == 0
        now = time.monotonic() if now is None else now
        return {
            "name": self.name,
            "url": self.url,
            "slots": self.slots,
            "state": self.state.value,
            "outstanding": self.outstanding,
            "idle": idle,
            "idle_seconds": round(now - self.idle_since, 3) if idle else 0.0,
            "served": self.served,
        }

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, {self.url!r}, {self.state.value}, outstanding={self.outstanding})"


class Registry:
    """Replicas by name, plus the list of ready ones the dispatcher scans on every request.

    Discoveries (static list, Kubernetes, the admin API) call `add`, `update`, `remove`, `replace`,
    `cordon` and `uncordon`; the proxy and the health prober call `mark_down` and `mark_ready`. Every
    change that may free capacity calls the listeners (the dispatcher, to dispatch what waits).
    """

    def __init__(self, *, default_slots: int = 1, connect_timeout: float = 2.0) -> None:
        self.default_slots = default_slots
        self.connect_timeout = connect_timeout
        self._by_name: dict[str, Replica] = {}
        self.ready: list[Replica] = []
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.ready = [r for r in self._by_name.values() if r.state is State.READY]
        for listener in self._listeners:
            listener()

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Replica | None:
        return self._by_name.get(name)

    def count(self, state: State) -> int:
        return sum(1 for r in self._by_name.values() if r.state is state)

    @property
    def ready_slots(self) -> int:
        return sum(r.slots for r in self.ready)

    def _put(self, name: str, url: str, slots: int | None) -> Replica:
        url = check_url(url)
        replica = self._by_name.get(name)
        if replica is None:
            replica = Replica(name, url, slots or self.default_slots, self.connect_timeout)
            self._by_name[name] = replica
            log.info("replica %s added: %s, %d slot(s)", name, url, replica.slots)
        else:
            if url != replica.url:
                replica.set_url(url, self.connect_timeout)
                replica.state = State.READY  # a new address: whatever made the old one down is moot
            if slots is not None:
                replica.slots = slots
        return replica

    def _drop(self, name: str) -> Replica | None:
        replica = self._by_name.pop(name, None)
        if replica is not None:
            replica.pool.close()
            log.info("replica %s removed (%d outstanding)", name, replica.outstanding)
        return replica

    def add(self, name: str, url: str, slots: int | None = None) -> Replica:
        """Add a replica, or update the one of that name; either way it is ready afterwards."""
        replica = self._put(name, url, slots)
        replica.state = State.READY
        self._changed()
        return replica

    def update(self, name: str, url: str | None = None, slots: int | None = None) -> Replica:
        """Change a known replica's URL or slots, keeping its state (unless the URL changes). KeyError when
        unknown."""
        replica = self._by_name[name]
        self._put(name, url or replica.url, slots)
        self._changed()
        return replica

    def remove(self, name: str) -> Replica | None:
        """Forget a replica: nothing new goes to it; requests it holds finish normally."""
        replica = self._drop(name)
        if replica is not None:
            self._changed()
        return replica

    def replace(self, specs: Iterable[ReplicaSpec]) -> list[Replica]:
        """Make the set exactly `specs`. Replicas that stay keep their state (a down one stays down until
        its probe passes, a cordoned one stays cordoned, unless its URL changes); new ones are ready."""
        specs = list(specs)
        wanted = {spec.name for spec in specs}
        for name in [n for n in self._by_name if n not in wanted]:
            self._drop(name)
        replicas = [self._put(spec.name, spec.url, spec.slots) for spec in specs]
        self._changed()
        return replicas

    def cordon(self, name: str) -> dict[str, Any] | None:
        """Send it nothing new. Returns its snapshot at the moment of cordoning (so the caller learns
        whether it was idle; once cordoned, an idle replica stays idle)."""
        replica = self._by_name.get(name)
        if replica is None:
            return None
        snapshot = replica.snapshot()
        if replica.state is not State.CORDONED:
            replica.state = State.CORDONED
            snapshot["state"] = State.CORDONED.value
            log.info("replica %s cordoned (%d outstanding)", name, replica.outstanding)
            self._changed()
        return snapshot

    def uncordon(self, name: str) -> Replica | None:
        replica = self._by_name.get(name)
        if replica is None:
            return None
        if replica.state is not State.READY:
            replica.state = State.READY
            log.info("replica %s uncordoned", name)
            self._changed()
        return replica

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Stop sending to it until its health path answers 200. A cordoned replica stays cordoned."""
        if replica.state is State.READY and self._by_name.get(replica.name) is replica:
            replica.state = State.DOWN
            replica.down_reason = reason
            replica.pool.clear()
            log.warning("replica %s down: %s", replica.name, reason)
            self._changed()

    def mark_ready(self, replica: Replica) -> None:
        if replica.state is State.DOWN and self._by_name.get(replica.name) is replica:
            replica.state = State.READY
            replica.down_reason = ""
            log.info("replica %s ready again", replica.name)
            self._changed()

    def down(self) -> list[Replica]:
        return [r for r in self._by_name.values() if r.state is State.DOWN]
