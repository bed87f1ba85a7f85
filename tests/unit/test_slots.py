"""The slot queue: FIFO, serialization, the bound, cancellation, drain and failures."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator

import pytest

from inference_app.slots import Aborted, JobFailed, NotAccepting, QueueFull, SlotQueue
from tests.conftest import wait_for


class Recorder:
    """A model stand-in: records the order jobs start and how many run at once; jobs wait for a gate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.running = 0
        self.max_running = 0
        self.gates: dict[str, threading.Event] = {}

    def gate(self, job: str) -> threading.Event:
        return self.gates.setdefault(job, threading.Event())

    def __call__(self, job: str) -> str:
        with self.lock:
            self.started.append(job)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if job.startswith("fail"):
                raise RuntimeError(f"{job} broke")
            if job.startswith("wait"):
                self.gate(job).wait(10)
            else:
                time.sleep(0.01)
            return job.upper()
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_queue(
    recorder: Recorder, slots: int = 1, max_queue: int = 8, expected: float = 2.0
) -> SlotQueue[str, str]:
    return SlotQueue(recorder, slots=slots, max_queue=max_queue, expected_seconds=lambda: expected)


@pytest.fixture
async def queue(recorder: Recorder) -> AsyncIterator[SlotQueue[str, str]]:
    q = make_queue(recorder)
    q.start()
    yield q
    q.abort("test over")
    for gate in recorder.gates.values():
        gate.set()
    q.stop()


async def test_jobs_run_one_at_a_time_in_arrival_order(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    tickets = [queue.submit(f"job{i}") for i in range(6)]
    results = await asyncio.gather(*(t.future for t in tickets))
    assert results == [f"JOB{i}" for i in range(6)]
    assert recorder.started == [f"job{i}" for i in range(6)]
    assert recorder.max_running == 1
    # Serialized: each job started after the one before it finished.
    for before, after in itertools.pairwise(tickets):
        assert after.started is not None
        assert before.finished is not None
        assert after.started >= before.finished


async def test_slots_bound_the_concurrency(recorder: Recorder) -> None:
    q = make_queue(recorder, slots=2)
    q.start()
    tickets = [q.submit(f"wait{i}") for i in range(4)]
    await wait_for(lambda: q.load().running == 2)
    assert q.load().queued == 2
    for i in range(4):
        recorder.gate(f"wait{i}").set()
    await asyncio.gather(*(t.future for t in tickets))
    assert recorder.max_running == 2
    q.stop()


async def test_queue_bound_refuses_with_retry_after(recorder: Recorder) -> None:
    q = make_queue(recorder, slots=1, max_queue=2, expected=2.0)
    q.start()
    tickets = [q.submit(f"wait{i}") for i in range(3)]  # 1 running + 2 waiting: full
    with pytest.raises(QueueFull) as refused:
        q.submit("one too many")
    # Three jobs ahead at the prior of 2 s each, one slot.
    assert refused.value.retry_after == 6
    for i in range(3):
        recorder.gate(f"wait{i}").set()
    await asyncio.gather(*(t.future for t in tickets))
    q.stop()


@pytest.mark.parametrize(
    ("slots", "ahead", "expected", "retry_after"),
    [
        (1, 1, 0.2, 1),  # never below one second
        (1, 9, 1.0, 9),
        (2, 9, 1.0, 5),  # ceil(4.5)
        (4, 3, 10.0, 8),  # ceil(7.5)
    ],
)
async def test_retry_after_is_the_backlog_over_the_slots(
    recorder: Recorder, slots: int, ahead: int, expected: float, retry_after: int
) -> None:
    q = make_queue(recorder, slots=slots, max_queue=ahead, expected=expected)
    q.start()
    tickets = [q.submit(f"wait{i}") for i in range(ahead)]
    assert q.retry_after() == retry_after
    for i in range(ahead):
        recorder.gate(f"wait{i}").set()
    await asyncio.gather(*(t.future for t in tickets))
    q.stop()


async def test_measured_service_time_replaces_the_prior(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    first = queue.submit("wait-a")
    assert queue.retry_after() == 2  # one job ahead at the 2 s prior
    recorder.gate("wait-a").set()
    await first.future
    await asyncio.gather(*(queue.submit(f"job{i}").future for i in range(3)))
    second = queue.submit("wait-b")
    assert queue.retry_after() == 1  # one job ahead at the measured ~10 ms
    recorder.gate("wait-b").set()
    await second.future


async def test_cancel_while_queued_means_the_job_never_runs(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    first = queue.submit("wait-first")
    await wait_for(lambda: queue.load().running == 1)
    leaver = queue.submit("leaver")
    last = queue.submit("last")
    assert queue.load().queued == 2
    assert queue.cancel(leaver) is True
    assert queue.load().queued == 1
    recorder.gate("wait-first").set()
    assert await last.future == "LAST"
    assert await first.future == "WAIT-FIRST"
    assert "leaver" not in recorder.started
    assert leaver.future.cancelled()


async def test_cancel_while_running_marks_the_ticket_abandoned(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    ticket = queue.submit("wait-long")
    await wait_for(lambda: queue.load().running == 1)
    assert queue.cancel(ticket) is False
    assert ticket.abandoned
    recorder.gate("wait-long").set()
    await wait_for(lambda: queue.load().running == 0)
    # The slot is free again for the next job.
    assert await queue.submit("next").future == "NEXT"


async def test_a_drain_does_not_wait_for_a_job_whose_client_left(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    ticket = queue.submit("wait-orphan")
    await wait_for(lambda: queue.load().running == 1)
    queue.cancel(ticket)
    # Nobody waits for its answer, so the drain is done although the job still runs.
    assert await queue.drain(seconds=1) is True
    assert queue.load().running == 1
    recorder.gate("wait-orphan").set()


async def test_the_busy_counter_never_goes_back(recorder: Recorder) -> None:
    q: SlotQueue[int, int] = SlotQueue(lambda n: n, slots=1, max_queue=64, expected_seconds=lambda: 0.0)
    q.start()
    drops: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        last = 0.0
        while not stop.is_set():
            value = q.load().busy_seconds
            if value < last:
                drops.append(last - value)
            last = max(last, value)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    until = time.monotonic() + 0.5
    while time.monotonic() < until:
        await asyncio.gather(*(q.submit(i).future for i in range(32)))
    stop.set()
    scraper.join()
    q.stop()
    assert drops == []


async def test_a_failing_job_fails_alone(queue: SlotQueue[str, str]) -> None:
    failing = queue.submit("fail-me")
    after = queue.submit("after")
    with pytest.raises(JobFailed, match="RuntimeError: fail-me broke"):
        await failing.future
    assert await after.future == "AFTER"


async def test_drain_waits_for_running_and_queued_work(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    tickets = [queue.submit(f"wait{i}") for i in range(3)]
    drained = asyncio.create_task(queue.drain(seconds=10))
    await asyncio.sleep(0.05)
    assert not drained.done()
    with pytest.raises(NotAccepting):
        queue.submit("too late")
    for i in range(3):
        recorder.gate(f"wait{i}").set()
    assert await drained is True
    assert [await t.future for t in tickets] == ["WAIT0", "WAIT1", "WAIT2"]


async def test_drain_of_an_idle_queue_returns_at_once(queue: SlotQueue[str, str]) -> None:
    assert await queue.drain(seconds=0.01) is True


async def test_drain_timeout_then_abort_fails_what_is_left(queue: SlotQueue[str, str]) -> None:
    tickets = [queue.submit(f"wait{i}") for i in range(3)]
    await wait_for(lambda: queue.load().running == 1)
    assert await queue.drain(seconds=0.05) is False
    assert queue.abort("drain time ran out") == 3
    for ticket in tickets:
        with pytest.raises(Aborted, match="drain time ran out"):
            await ticket.future
    assert queue.load().queued == 0


async def test_load_counts_busy_time_including_the_running_job(
    queue: SlotQueue[str, str], recorder: Recorder
) -> None:
    await queue.submit("job").future
    done = queue.load().busy_seconds
    assert done >= 0.01
    ticket = queue.submit("wait-now")
    await wait_for(lambda: queue.load().running == 1)
    await asyncio.sleep(0.05)
    assert queue.load().busy_seconds >= done + 0.04
    recorder.gate("wait-now").set()
    await ticket.future


async def test_submit_before_start_is_refused(recorder: Recorder) -> None:
    with pytest.raises(NotAccepting):
        make_queue(recorder).submit("early")


def test_bad_sizes_are_refused(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="slots"):
        make_queue(recorder, slots=0)
