"""Admission to the model: `slots` jobs run at once, up to `max_queue` wait in FIFO order, the rest are
refused with a Retry-After estimate.

Each slot is a worker thread that takes the next waiting job itself, so the hand-over from one job to
the next never waits for the event loop (which may be busy parsing requests or answering /metrics).
The event loop only enqueues, cancels, and receives results.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def post_to_loop(
    loop: asyncio.AbstractEventLoop | None, callback: Callable[..., object], *args: object
) -> None:
    """Run `callback(*args)` on `loop` from another thread; nothing if the loop has closed."""
    if loop is None or loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
        loop.call_soon_threadsafe(callback, *args)


class QueueFull(Exception):
    """Every slot is busy and the queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full; retry in about {retry_after} s")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The queue is draining or stopped: it admits nothing new."""


class Aborted(Exception):
    """An admitted job was given up (drain time ran out, or a forced stop) before it answered."""


class JobFailed(Exception):
    """The model raised while running the job."""


@dataclass(frozen=True)
class Load:
    queued: int
    running: int
    slots: int
    busy_seconds: float


@dataclass(eq=False)
class Ticket(Generic[J, R]):
    job: J
    future: asyncio.Future[R]
    enqueued: float
    started: float | None = None
    finished: float | None = None
    started_wall: float | None = None
    abandoned: bool = False

    @property
    def queue_seconds(self) -> float:
        return (self.started or self.enqueued) - self.enqueued

    @property
    def service_seconds(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started


@dataclass
class _State(Generic[J, R]):
    waiting: collections.deque[Ticket[J, R]] = field(default_factory=collections.deque)
    running: set[Ticket[J, R]] = field(default_factory=set)
    # Finished, result on its way to the event loop: not idle yet, or a drain could end before it is sent.
    delivering: set[Ticket[J, R]] = field(default_factory=set)
    busy_done: float = 0.0
    recent: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=32))


class SlotQueue(Generic[J, R]):
    def __init__(
        self,
        run: Callable[[J], R],
        *,
        slots: int,
        max_queue: int,
        expected_seconds: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if slots < 1 or max_queue < 0:
            raise ValueError("slots must be >= 1 and max_queue >= 0")
        self._run = run
        self.slots = slots
        self.max_queue = max_queue
        self._expected_seconds = expected_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._state: _State[J, R] = _State()
        self._accepting = True
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start the slot threads; call once, from the event loop that will await the results."""
        if self._loop is not None:
            raise RuntimeError("a SlotQueue starts once; make a new one")
        self._loop = asyncio.get_running_loop()
        for n in range(self.slots):
            # Daemon threads: a job that outlives a drain deadline must not hold the process open.
            threading.Thread(target=self._worker, name=f"gpuscale-slot-{n}", daemon=True).start()

    def stop(self) -> None:
        """Refuse new work and let idle slot threads exit. Jobs still running finish in the background."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()

    # --- the event loop's side -------------------------------------------------------------------

    def submit(self, job: J) -> Ticket[J, R]:
        """Admit a job or raise QueueFull / NotAccepting. Await `ticket.future` for the result."""
        if self._loop is None:
            raise NotAccepting("the slot queue is not started")
        ticket: Ticket[J, R] = Ticket(job, self._loop.create_future(), self._clock())
        with self._cond:
            if not self._accepting:
                raise NotAccepting("draining: this server admits no new requests")
            state = self._state
            if len(state.waiting) + len(state.running) >= self.slots + self.max_queue:
                raise QueueFull(self._retry_after_locked())
            state.waiting.append(ticket)
            self._idle.clear()
            self._cond.notify()
        return ticket

    def cancel(self, ticket: Ticket[J, R]) -> bool:
        """The client went away. Returns True when the job had not started (and now never will)."""
        with self._cond:
            try:
                self._state.waiting.remove(ticket)
                removed = True
            except ValueError:
                ticket.abandoned = True
                removed = False
        if not ticket.future.done():
            ticket.future.cancel()
        self._update_idle()
        return removed

    def load(self) -> Load:
        with self._cond:
            # Read under the lock, as the worker reads a job's end: the busy counter never goes back.
            now = self._clock()
            state = self._state
            running_for = sum(now - t.started for t in state.running if t.started is not None)
            return Load(len(state.waiting), len(state.running), self.slots, state.busy_done + running_for)

    def retry_after(self) -> int:
        with self._cond:
            return self._retry_after_locked()

    async def drain(self, seconds: float) -> bool:
        """Admit nothing new and wait until every admitted job has answered. False if time ran out."""
        with self._cond:
            self._accepting = False
        self._update_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def abort(self, reason: str) -> int:
        """Fail every admitted job that has not answered yet, with `reason`. Returns the count."""
        with self._cond:
            self._accepting = False
            tickets = [*self._state.waiting, *self._state.running]
            self._state.waiting.clear()
        failed = 0
        for ticket in tickets:
            if not ticket.future.done():
                ticket.future.set_exception(Aborted(reason))
                failed += 1
        self._update_idle()
        return failed

    # --- internals -------------------------------------------------------------------------------

    def _retry_after_locked(self) -> int:
        # Time for the work ahead of a newcomer to clear, at the recent mean service time.
        state = self._state
        recent = state.recent
        mean = sum(recent) / len(recent) if recent else self._expected_seconds()
        ahead = len(state.waiting) + len(state.running)
        return max(1, math.ceil(ahead * mean / self.slots))

    def _update_idle(self) -> None:
        # A running job whose client has gone has nobody to answer: it does not hold up a drain.
        with self._cond:
            state = self._state
            idle = not state.waiting and not state.delivering and all(t.abandoned for t in state.running)
        if idle:
            self._idle.set()

    def _worker(self) -> None:
        state = self._state
        while True:
            with self._cond:
                while not state.waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping and not state.waiting:
                    return
                ticket = state.waiting.popleft()
                ticket.started = self._clock()
                ticket.started_wall = self._wall_clock()
                state.running.add(ticket)
            result: R | None = None
            error: BaseException | None = None
            try:
                result = self._run(ticket.job)
            except BaseException as exc:  # a slot must survive any model error
                error = exc
            with self._cond:
                ticket.finished = finished = self._clock()
                elapsed = finished - (ticket.started or finished)
                state.busy_done += elapsed
                state.recent.append(elapsed)
                state.running.discard(ticket)
                state.delivering.add(ticket)
            post_to_loop(self._loop, self._complete, ticket, result, error)

    def _complete(self, ticket: Ticket[J, R], result: R | None, error: BaseException | None) -> None:
        with self._cond:
            self._state.delivering.discard(ticket)
        if not ticket.future.done():
            if error is not None:
                failure = JobFailed(f"{type(error).__name__}: {error}")
                failure.__cause__ = error
                ticket.future.set_exception(failure)
            else:
                ticket.future.set_result(result)  # type: ignore[arg-type]
        self._update_idle()
