"""The one FIFO queue and the choice of replica (join the shortest queue, most recently used first).

Single-threaded on the event loop, so no locks: a request that finds the queue empty and a replica
free is assigned at once, without a future or a timer; the others wait in a deque, each with one
timer for its queue timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Collection
from typing import Any

from gpuscale_gateway.registry import Registry, Replica

# Weight of the newest response time in the running mean (about the last 10 requests count).
EWMA_WEIGHT = 0.2


class Refused(Exception):
    """The gateway answers this request itself."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QueueFull(Refused):
    """`max_queue` requests already wait: 429."""


class QueueTimeout(Refused):
    """No replica became free within the queue timeout: 503."""


class Stopped(Refused):
    """The gateway stopped (drain deadline, or a second signal) before a replica was free: 503."""


class ClientGone(Exception):
    """The client disconnected while its request waited; it was never forwarded."""


class Waiter:
    """A request in the queue. `payload` is the caller's (the proxy's request); `prepared` is what the
    `on_assign` hook did with it when a replica was assigned (the proxy: a connection it was sent on)."""

    __slots__ = ("avoid", "enqueued", "future", "payload", "prepared", "timer")

    def __init__(
        self,
        future: asyncio.Future[Replica],
        avoid: Collection[Replica] | None,
        enqueued: float,
        payload: Any = None,
    ) -> None:
        self.future = future
        self.avoid = avoid
        self.enqueued = enqueued
        self.payload = payload
        self.prepared: Any = None
        self.timer: asyncio.TimerHandle | None = None


def _preferred(replica: Replica, best: Replica) -> bool:
    """Fewer requests outstanding; as many, and it answered last (the hot set stays hot)."""
    return replica.outstanding < best.outstanding or (
        replica.outstanding == best.outstanding and replica.last_finished > best.last_finished
    )


class Dispatcher:
    def __init__(
        self, registry: Registry, *, max_queue: int, queue_timeout: float, prefetch: int = 0
    ) -> None:
        self.registry = registry
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.prefetch = prefetch
        self.queue: collections.deque[Waiter] = collections.deque()
        self.inflight = 0  # assigned to a replica and not yet released
        self.mean_seconds: float | None = None  # running mean of replicas' response times
        # Called as a waiting request gets its replica, before its task wakes: the proxy sends the
        # request from here, so the replica gets its next job without waiting for that task to run.
        self.on_assign: Callable[[Waiter, Replica], None] | None = None
        registry.on_change(self.pump)

    # choosing

    def pick(self, avoid: Collection[Replica] | None = None) -> Replica | None:
        """The ready replica with the fewest outstanding requests, a free slot before a prefetch place;
        among equals the one that answered last (so work packs onto a hot set and the rest go idle,
        which is what lets the autoscaler find idle replicas to remove). Replicas in `avoid` (they
        refused this request already) only when no other one can take it."""
        best: Replica | None = None
        best_free = False
        prefetch = self.prefetch
        for replica in self.registry.ready:
            outstanding = replica.outstanding
            free = outstanding < replica.slots
            if not free and outstanding >= replica.slots + prefetch:
                continue
            if avoid and replica in avoid:
                continue
            if best is None or (free and not best_free) or (free == best_free and _preferred(replica, best)):
                best, best_free = replica, free
        if best is None and avoid:
            return self.pick()
        return best

    def pick_any(self, avoid: Collection[Replica] = ()) -> Replica | None:
        """For requests that take no slot: the least-loaded ready replica, whatever its load."""
        best: Replica | None = None
        for replica in self.registry.ready:
            if replica in avoid:
                continue
            if best is None or _preferred(replica, best):
                best = replica
        return best

    # assigning

    def try_acquire(self, avoid: Collection[Replica] | None = None, front: bool = False) -> Replica | None:
        """A replica at once, when nothing waits ahead (or `front`: a retry keeps its place) and one is
        free; else None."""
        if self.queue and not front:
            return None
        replica = self.pick(avoid)
        if replica is not None:
            replica.outstanding += 1
            self.inflight += 1
        return replica

    def enqueue(
        self,
        deadline: float,
        *,
        front: bool = False,
        avoid: Collection[Replica] | None = None,
        payload: Any = None,
    ) -> Waiter:
        """Wait for a replica until `deadline` (monotonic). A retry goes `front`, keeping its place and
        not counting against the bound. Raises QueueFull or QueueTimeout."""
        if not front and len(self.queue) >= self.max_queue:
            raise QueueFull(self._full_message(), self.retry_after())
        now = time.monotonic()
        if deadline <= now:
            raise self._timeout()
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop.create_future(), avoid, now, payload)
        waiter.timer = loop.call_at(loop.time() + (deadline - now), self._expire, waiter)
        if front:
            self.queue.appendleft(waiter)
        else:
            self.queue.append(waiter)
        return waiter

    async def acquire(
        self, deadline: float | None = None, *, front: bool = False, avoid: Collection[Replica] | None = None
    ) -> Replica:
        """try_acquire, else enqueue and wait."""
        replica = self.try_acquire(avoid, front)
        if replica is not None:
            return replica
        if deadline is None:
            deadline = time.monotonic() + self.queue_timeout
        return await self.wait(self.enqueue(deadline, front=front, avoid=avoid))

    async def wait(self, waiter: Waiter) -> Replica:
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._forget(waiter)
            raise

    def _forget(self, waiter: Waiter) -> None:
        """The waiting task was cancelled: leave the queue, or hand back a replica already assigned."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.release(future.result(), None)
        else:
            self.cancel(waiter, ClientGone())

    def cancel(self, waiter: Waiter, error: BaseException) -> bool:
        """Take a waiting request out of the queue, failing it with `error`; False if it had a replica."""
        if waiter.future.done():
            return False
        with contextlib.suppress(ValueError):  # already taken off by pump or abort
            self.queue.remove(waiter)
        if waiter.timer is not None:
            waiter.timer.cancel()
        waiter.future.set_exception(error)
        return True

    def _expire(self, waiter: Waiter) -> None:
        self.cancel(waiter, self._timeout())

    def release(self, replica: Replica, seconds: float | None) -> None:
        """The replica answered (`seconds` after dispatch), or the exchange failed (None)."""
        replica.outstanding -= 1
        self.inflight -= 1
        now = time.monotonic()
        if seconds is not None:
            replica.served += 1
            replica.last_finished = now
            mean = self.mean_seconds
            self.mean_seconds = seconds if mean is None else mean + EWMA_WEIGHT * (seconds - mean)
        if replica.outstanding == 0:
            replica.idle_since = now
        if self.queue:
            self.pump()

    def pump(self) -> None:
        """Hand free replicas to the requests at the head of the queue."""
        queue = self.queue
        while queue:
            waiter = queue[0]
            replica = self.pick(waiter.avoid)
            if replica is None:
                return
            queue.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            replica.outstanding += 1
            self.inflight += 1
            if self.on_assign is not None:
                self.on_assign(waiter, replica)
            waiter.future.set_result(replica)

    def abort_waiting(self, message: str) -> int:
        """Fail every waiting request with Stopped(message); how many there were."""
        waiting = list(self.queue)
        for waiter in waiting:
            self.cancel(waiter, Stopped(message))
        return len(waiting)

    # telling the client when to come back

    def retry_after(self) -> int:
        """Seconds until the work ahead of a new request is done: (waiting + outstanding + 1) requests
        at the mean response time, spread over the ready replicas' slots. Without an estimate yet,
        1 s per request; without a ready replica, 1 slot."""
        mean = self.mean_seconds if self.mean_seconds is not None else 1.0
        slots = self.registry.ready_slots or 1
        return max(1, math.ceil((len(self.queue) + self.inflight + 1) * mean / slots))

    def _full_message(self) -> str:
        ready = len(self.registry.ready)
        if ready == 0:
            return (
                f"queue full: {len(self.queue)} request(s) waiting and no replica is ready; "
                f"retry in about {self.retry_after()} s"
            )
        return (
            f"queue full: {len(self.queue)} request(s) waiting for {ready} ready replica(s) "
            f"({self.registry.ready_slots} slot(s)); retry in about {self.retry_after()} s"
        )

    def _timeout(self) -> QueueTimeout:
        return QueueTimeout(
            f"no replica became free within {self.queue_timeout:g} s ({len(self.registry.ready)} ready)",
            self.retry_after(),
        )
