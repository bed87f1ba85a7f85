"""The gateway's queue and choice of replica, without sockets: FIFO, join-the-shortest-queue with the
most-recently-used tie-break, the slots + prefetch limit, the bound, the timeout, leaving the queue."""

from __future__ import annotations

import asyncio
import time

import pytest

from gpuscale_gateway.dispatch import ClientGone, Dispatcher, QueueFull, QueueTimeout, Stopped
from gpuscale_gateway.registry import Registry, Replica, State


def setup(
    *names: str, slots: int = 1, prefetch: int = 0, max_queue: int = 100, timeout: float = 60.0
) -> tuple[Registry, Dispatcher]:
    registry = Registry(default_slots=slots)
    dispatcher = Dispatcher(registry, max_queue=max_queue, queue_timeout=timeout, prefetch=prefetch)
    for i, name in enumerate(names):
        registry.add(name, f"http://127.0.0.1:{9000 + i}")
    return registry, dispatcher


def replica(registry: Registry, name: str) -> Replica:
    found = registry.get(name)
    assert found is not None
    return found


async def test_waiting_requests_get_replicas_in_arrival_order() -> None:
    registry, dispatcher = setup("a")
    first = await dispatcher.acquire()
    assert first.name == "a"
    order: list[int] = []

    async def wait(i: int) -> None:
        got = await dispatcher.acquire()
        order.append(i)
        await asyncio.sleep(0)
        dispatcher.release(got, 0.1)

    tasks = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert len(dispatcher.queue) == 5
    dispatcher.release(first, 0.1)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert dispatcher.inflight == 0
    assert replica(registry, "a").served == 6


async def test_fewest_outstanding_first_then_most_recently_finished() -> None:
    registry, dispatcher = setup("a", "b", "c", slots=4)
    a, b, c = (replica(registry, n) for n in "abc")
    # Nobody has finished anything: the first registered wins the tie.
    assert dispatcher.pick() is a
    a.outstanding, b.outstanding, c.outstanding = 2, 1, 1
    b.last_finished, c.last_finished = 10.0, 20.0
    assert dispatcher.pick() is c  # b and c tie on load; c answered last
    c.outstanding = 2
    assert dispatcher.pick() is b


async def test_work_packs_onto_the_replica_that_just_answered() -> None:
    # Sequential requests all go to one replica, so the others stay idle (scale-down candidates).
    registry, dispatcher = setup("a", "b", "c")
    used = []
    for _ in range(5):
        got = await dispatcher.acquire()
        used.append(got.name)
        dispatcher.release(got, 0.01)
    assert len(set(used)) == 1
    idle = [r for r in registry if r.served == 0]
    assert len(idle) == 2


async def test_never_more_than_slots_plus_prefetch_and_free_slots_first() -> None:
    registry, dispatcher = setup("a", "b", prefetch=1)
    a, b = replica(registry, "a"), replica(registry, "b")
    a.last_finished = 99.0  # a is the most recently used, yet b's free slot wins over a's prefetch place
    assert dispatcher.try_acquire() is a
    assert dispatcher.try_acquire() is b
    # Both slots busy: now the prefetch places, one each.
    assert {dispatcher.try_acquire(), dispatcher.try_acquire()} == {a, b}
    assert dispatcher.try_acquire() is None
    assert (a.outstanding, b.outstanding) == (2, 2)


async def test_without_prefetch_one_request_per_slot() -> None:
    _, dispatcher = setup("a", slots=2)
    assert dispatcher.try_acquire() is not None
    assert dispatcher.try_acquire() is not None
    assert dispatcher.try_acquire() is None


async def test_a_full_queue_refuses_with_retry_after_from_the_work_ahead() -> None:
    _, dispatcher = setup("a", "b", max_queue=2)
    dispatcher.mean_seconds = 2.0
    for _ in range(2):
        await dispatcher.acquire()  # both slots busy
    waiting = [asyncio.create_task(dispatcher.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refused:
        await dispatcher.acquire()
    # (2 waiting + 2 outstanding + this one) x 2 s / 2 slots = 5 s
    assert refused.value.retry_after == 5
    assert "2 request(s) waiting for 2 ready replica(s)" in refused.value.message
    for task in waiting:
        task.cancel()


async def test_with_no_ready_replica_retry_after_assumes_one_second_and_one_slot() -> None:
    _, dispatcher = setup(max_queue=1)
    waiting = asyncio.create_task(dispatcher.acquire())
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refused:
        await dispatcher.acquire()
    assert refused.value.retry_after == 2  # (1 waiting + 0 outstanding + 1) x 1 s / 1 slot
    assert "no replica is ready" in refused.value.message
    waiting.cancel()


async def test_max_queue_zero_refuses_whatever_cannot_go_at_once() -> None:
    _, dispatcher = setup("a", max_queue=0)
    await dispatcher.acquire()
    with pytest.raises(QueueFull):
        await dispatcher.acquire()


async def test_waiting_past_the_timeout_is_refused() -> None:
    _, dispatcher = setup("a", timeout=0.05)
    await dispatcher.acquire()
    with pytest.raises(QueueTimeout) as refused:
        await dispatcher.acquire()
    assert refused.value.message == "no replica became free within 0.05 s (1 ready)"
    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 1
    assert not dispatcher.queue


async def test_a_request_taken_out_of_the_queue_never_gets_a_replica() -> None:
    _, dispatcher = setup("a")
    held = await dispatcher.acquire()
    leaving = dispatcher.enqueue(time.monotonic() + 60)
    staying = asyncio.create_task(dispatcher.acquire())
    await asyncio.sleep(0)
    assert dispatcher.cancel(leaving, ClientGone())
    with pytest.raises(ClientGone):
        await leaving.future
    dispatcher.release(held, 0.1)
    assert (await staying).name == "a"


async def test_a_cancelled_waiter_hands_back_a_replica_it_was_given() -> None:
    registry, dispatcher = setup("a")
    held = await dispatcher.acquire()
    waiter = asyncio.create_task(dispatcher.acquire())
    await asyncio.sleep(0)
    dispatcher.release(held, 0.1)  # assigns "a" to the waiter, whose task has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert replica(registry, "a").outstanding == 0
    assert dispatcher.inflight == 0


async def test_a_retry_goes_to_the_head_and_past_the_bound() -> None:
    _, dispatcher = setup("a", max_queue=1)
    held = await dispatcher.acquire()
    order: list[str] = []

    async def wait(tag: str, front: bool) -> None:
        got = await dispatcher.acquire(front=front)
        order.append(tag)
        dispatcher.release(got, 0.1)

    queued = asyncio.create_task(wait("queued", False))
    await asyncio.sleep(0)
    retried = asyncio.create_task(wait("retried", True))
    await asyncio.sleep(0)
    assert len(dispatcher.queue) == 2
    dispatcher.release(held, None)
    await asyncio.gather(queued, retried)
    assert order == ["retried", "queued"]


async def test_a_replica_that_refused_is_avoided_while_another_can_take_the_request() -> None:
    registry, dispatcher = setup("a", "b")
    a, b = replica(registry, "a"), replica(registry, "b")
    assert dispatcher.pick(avoid={a}) is b
    b.outstanding = 1
    assert dispatcher.pick(avoid={a}) is a  # nobody else: better than waiting forever


async def test_cordoned_and_down_replicas_get_nothing_new_and_uncordon_dispatches_the_queue() -> None:
    registry, dispatcher = setup("a", "b")
    registry.cordon("a")
    registry.mark_down(replica(registry, "b"), "refused")
    assert dispatcher.try_acquire() is None
    waiting = asyncio.create_task(dispatcher.acquire())
    await asyncio.sleep(0)
    assert len(dispatcher.queue) == 1
    registry.uncordon("a")
    assert (await waiting).name == "a"


async def test_a_new_replica_takes_what_waits() -> None:
    registry, dispatcher = setup()
    waiting = asyncio.create_task(dispatcher.acquire())
    await asyncio.sleep(0)
    registry.add("late", "http://127.0.0.1:9999")
    assert (await waiting).name == "late"


async def test_abort_fails_every_waiting_request() -> None:
    _, dispatcher = setup("a")
    await dispatcher.acquire()
    waiting = [asyncio.create_task(dispatcher.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert dispatcher.abort_waiting("stopping") == 3
    for task in waiting:
        with pytest.raises(Stopped):
            await task
    assert not dispatcher.queue


async def test_the_mean_response_time_follows_recent_answers() -> None:
    registry, dispatcher = setup("a")
    for seconds in (1.0, 1.0, 3.0):
        dispatcher.release(await dispatcher.acquire(), seconds)
    assert dispatcher.mean_seconds == pytest.approx(1.0 + 0.2 * 2.0)
    # A failed exchange says nothing about service time and serves nothing.
    dispatcher.release(await dispatcher.acquire(), None)
    assert dispatcher.mean_seconds == pytest.approx(1.4)
    assert replica(registry, "a").served == 3


async def test_registry_states_and_snapshots() -> None:
    registry, dispatcher = setup("a", "b")
    a = replica(registry, "a")
    got = await dispatcher.acquire()
    assert got is a
    busy = registry.cordon("a")
    assert busy is not None
    assert busy["state"] == "cordoned"
    assert (busy["outstanding"], busy["idle"], busy["idle_seconds"]) == (1, False, 0.0)
    dispatcher.release(a, 0.1)
    idle = a.snapshot()
    assert idle["idle"] is True
    assert idle["served"] == 1
    # A cordoned replica stays cordoned when marked down (the controller decided), and replace keeps
    # the state of the replicas that stay.
    registry.mark_down(a, "x")
    assert a.state is State.CORDONED
    registry.mark_down(replica(registry, "b"), "refused")
    from gpuscale_gateway.settings import ReplicaSpec

    registry.replace(
        [ReplicaSpec(name="b", url=replica(registry, "b").url), ReplicaSpec(name="c", url="http://h:1")]
    )
    assert [(r.name, r.state) for r in registry] == [("b", State.DOWN), ("c", State.READY)]
    assert registry.get("a") is None
    registry.update("b", url="http://other:2")  # a new address: whatever made it down is moot
    assert replica(registry, "b").state is State.READY
    assert registry.remove("b") is not None
    assert registry.remove("b") is None
