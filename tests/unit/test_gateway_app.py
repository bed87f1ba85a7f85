"""The gateway in this process (its uvicorn server on loopback) in front of scripted fake replicas:
forwarding, the queue's answers, retries, the admin API, metrics and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gpuscale.promtext import parse_samples

from gpuscale_gateway.registry import State
from gpuscale_gateway.server import RunningGateway
from inference_app.exit_codes import EXIT_DRAIN_INCOMPLETE, EXIT_OK
from tests.conftest import wait_for
from tests.unit.test_gateway_fakes import (
    FakeReplica,
    Handler,
    Received,
    chunked_in_two,
    client,
    gateway,
    json_handler,
    replicas,
    response_bytes,
)


def held(gate: asyncio.Event, payload: object = None) -> Handler:
    """A handler that answers only once `gate` is set."""

    async def handle(request: Received, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        body = json.dumps(payload if payload is not None else {"target": request.target}).encode()
        writer.write(response_bytes(200, body, [("content-type", "application/json")]))

    return handle


Jobs = list[asyncio.Task[httpx.Response]]
Held = tuple[RunningGateway, httpx.AsyncClient, asyncio.Event, asyncio.Event, Jobs]


@contextlib.asynccontextmanager
async def one_running_rest_queued(count: int, **settings: Any) -> AsyncIterator[Held]:
    """`count` requests sent to a gateway over one held replica: one runs, the rest wait in the queue.
    Yields the gateway, its client, the gate that releases the replica, an event set when the gateway
    asks to exit, and the requests' tasks."""
    gate = asyncio.Event()
    async with replicas(held(gate)) as fakes, gateway(fakes, **settings) as gw, client(gw.url) as c:
        exited = asyncio.Event()
        gw.gateway.on_exit_request(exited.set)
        jobs = [asyncio.create_task(c.post(f"/{i}", json={})) for i in range(count)]
        await wait_for(lambda: len(gw.gateway.dispatcher.queue) == count - 1)
        yield gw, c, gate, exited, jobs


async def metrics(admin_url: str) -> dict[str, float]:
    async with client(admin_url) as c:
        return parse_samples((await c.get("/metrics")).text)


async def test_requests_and_answers_pass_through_with_proxy_headers() -> None:
    async def echo(request: Received, writer: asyncio.StreamWriter) -> None:
        body = json.dumps(
            {
                "method": request.method,
                "target": request.target,
                "headers": request.headers,
                "body": request.body.decode(),
            }
        ).encode()
        writer.write(
            response_bytes(
                207,
                body,
                [("content-type", "application/json"), ("keep-alive", "timeout=5"), ("x-model", "m1")],
            )
        )

    async with replicas(echo) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        answer = await c.post(
            "/v2/models/m/infer?x=1&y=%20",
            content=b'{"a": 1}',
            headers={"x-forwarded-for": "10.0.0.9", "te": "trailers", "x-custom": "kept"},
        )
    assert answer.status_code == 207
    assert answer.headers["gpuscale-replica"] == "r0"
    assert answer.headers["x-model"] == "m1"
    assert "keep-alive" not in answer.headers
    seen = answer.json()
    headers = dict(seen["headers"])
    assert (seen["method"], seen["target"], seen["body"]) == (
        "POST",
        "/v2/models/m/infer?x=1&y=%20",
        '{"a": 1}',
    )
    assert headers["host"] == f"127.0.0.1:{fakes[0].port}"
    assert headers["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
    assert headers["x-custom"] == "kept"
    assert headers["content-length"] == "8"
    assert "te" not in headers


async def test_queued_requests_go_in_arrival_order_one_per_slot() -> None:
    gate = asyncio.Event()
    async with replicas(held(gate)) as fakes, gateway(fakes) as gw, client(gw.url) as c:

        async def send(i: int) -> httpx.Response:
            return await c.post(f"/job/{i}", json={})

        async def arrived(n: int) -> None:
            dispatcher = gw.gateway.dispatcher
            await wait_for(lambda: len(dispatcher.queue) + dispatcher.inflight == n)

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(send(i)))
            await arrived(i + 1)  # one after the other: their order is known
        samples = await metrics(gw.admin_url)
        assert samples["gpuscale_queue_depth"] == 3
        assert samples["gpuscale_inflight_requests"] == 1
        assert samples['gpuscale_gateway_replica_outstanding{replica="r0"}'] == 1
        assert len(fakes[0].requests) == 1  # one slot: the replica holds one request
        gate.set()
        answers = await asyncio.gather(*tasks)
    assert [a.status_code for a in answers] == [200] * 4
    assert [r.target for r in fakes[0].requests] == ["/job/0", "/job/1", "/job/2", "/job/3"]


async def test_a_full_queue_answers_429_with_retry_after() -> None:
    gate = asyncio.Event()
    async with replicas(held(gate)) as fakes, gateway(fakes, max_queue=1) as gw, client(gw.url) as c:
        first = asyncio.create_task(c.post("/a", json={}))
        await wait_for(lambda: gw.gateway.dispatcher.inflight == 1)
        second = asyncio.create_task(c.post("/b", json={}))
        await wait_for(lambda: len(gw.gateway.dispatcher.queue) == 1)
        refused = await c.post("/c", json={})
        gate.set()
        await asyncio.gather(first, second)
        samples = await metrics(gw.admin_url)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"].startswith("queue full: 1 request(s) waiting for 1 ready replica(s)")
    assert samples['gpuscale_gateway_requests_total{outcome="rejected_full"}'] == 1
    assert samples['gpuscale_gateway_requests_total{outcome="ok"}'] == 2


async def test_waiting_past_the_queue_timeout_answers_503() -> None:
    gate = asyncio.Event()
    async with (
        replicas(held(gate)) as fakes,
        gateway(fakes, queue_timeout_seconds=0.1) as gw,
        client(gw.url) as c,
    ):
        first = asyncio.create_task(c.post("/a", json={}))
        await wait_for(lambda: gw.gateway.dispatcher.inflight == 1)
        late = await c.post("/b", json={})
        gate.set()
        await first
        samples = await metrics(gw.admin_url)
    assert late.status_code == 503
    assert late.json() == {"error": "no replica became free within 0.1 s (1 ready)"}
    assert int(late.headers["retry-after"]) >= 1
    assert samples['gpuscale_gateway_requests_total{outcome="timeout"}'] == 1


async def test_a_client_that_leaves_while_queued_is_never_forwarded() -> None:
    gate = asyncio.Event()
    async with replicas(held(gate)) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        first = asyncio.create_task(c.post("/first", json={}))
        await wait_for(lambda: gw.gateway.dispatcher.inflight == 1)
        async with client(gw.url) as leaver:
            leaving = asyncio.create_task(leaver.post("/left", json={}))
            await wait_for(lambda: len(gw.gateway.dispatcher.queue) == 1)
            leaving.cancel()
        await wait_for(lambda: not gw.gateway.dispatcher.queue)
        gate.set()
        await first
        assert (await c.post("/after", json={})).status_code == 200
        samples = await metrics(gw.admin_url)
    assert [r.target for r in fakes[0].requests] == ["/first", "/after"]
    assert samples['gpuscale_gateway_requests_total{outcome="client_gone"}'] == 1


async def test_a_refused_connection_marks_the_replica_down_and_the_request_goes_elsewhere() -> None:
    async with replicas(json_handler()) as fakes:
        dead = fakes[0].port
        await fakes[0].stop()
        async with (
            replicas(json_handler()) as live,
            gateway([], replicas=f"dead=http://127.0.0.1:{dead},live={live[0].url}") as gw,
        ):
            async with client(gw.url) as c:
                answer = await c.post("/x", json={})
            assert answer.status_code == 200
            assert answer.headers["gpuscale-replica"] == "live"
            dead_replica = gw.gateway.registry.get("dead")
            assert dead_replica is not None
            assert dead_replica.state is State.DOWN
            samples = await metrics(gw.admin_url)
            assert samples["gpuscale_gateway_retries_total"] == 1
            assert samples['gpuscale_gateway_replicas{state="down"}'] == 1
            # Something listens there again: the health probe brings it back.
            revived = await FakeReplica().start(dead)
            try:
                await wait_for(lambda: dead_replica.state is State.READY)
            finally:
                await revived.stop()


async def test_not_admitted_answers_are_retried_elsewhere_and_unavailable_marks_down() -> None:
    busy = json_handler(
        429, {"error": "queue full"}, [("retry-after", "3"), ("gpuscale-not-admitted", "queue-full")]
    )
    draining = json_handler(
        503, {"error": "draining"}, [("gpuscale-not-admitted", "unavailable"), ("connection", "close")]
    )
    async with replicas(busy, draining, json_handler()) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        answer = await c.post("/x", json={"n": 1})
        samples = await metrics(gw.admin_url)
        states = {r.name: r.state for r in gw.gateway.registry}
    assert answer.status_code == 200
    assert answer.headers["gpuscale-replica"] == "r2"
    assert [len(f.requests) for f in fakes] == [1, 1, 1]
    assert fakes[2].requests[0].body == b'{"n":1}'
    assert samples["gpuscale_gateway_retries_total"] == 2
    assert states == {"r0": State.READY, "r1": State.DOWN, "r2": State.READY}


async def test_a_replica_that_vanishes_after_the_request_gets_502_and_no_retry() -> None:
    async def vanish(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with replicas(vanish, json_handler()) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        answer = await c.post("/x", json={})
        assert answer.status_code == 502
        assert answer.json()["error"] == (
            "replica r0 failed after the request was sent; it may have run, so it was not retried: "
            "the replica closed the connection"
        )
        assert len(fakes[1].requests) == 0
        r0 = gw.gateway.registry.get("r0")
        assert r0 is not None
        assert r0.state is State.DOWN
        assert (await c.post("/y", json={})).headers["gpuscale-replica"] == "r1"


async def test_every_replica_refusing_ends_in_502_after_a_few_attempts() -> None:
    busy = json_handler(429, {"error": "full"}, [("gpuscale-not-admitted", "queue-full")])
    async with replicas(busy) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        answer = await c.post("/x", json={})
    assert answer.status_code == 502
    assert (
        answer.json()["error"]
        == "no replica took the request in 5 attempts; last: replica r0 answered 429 queue-full"
    )


async def test_streamed_answers_reach_the_client_as_they_come() -> None:
    gate = asyncio.Event()

    async with (
        replicas(chunked_in_two(gate)) as fakes,
        gateway(fakes) as gw,
        client(gw.url) as c,
        c.stream("POST", "/s", json={}) as answer,
    ):
        pieces = answer.aiter_raw()
        assert await pieces.__anext__() == b"first"
        gate.set()
        rest = b"".join([piece async for piece in pieces])
    assert rest == b"second"


async def test_bodies_over_the_buffer_stream_to_the_replica() -> None:
    async def size(request: Received, writer: asyncio.StreamWriter) -> None:
        body = json.dumps(
            {"size": len(request.body), "chunked": request.chunked, "ok": request.body == big}
        ).encode()
        writer.write(response_bytes(200, body))

    big = bytes(range(256)) * 400  # 100 KiB
    async with replicas(size) as fakes, gateway(fakes, buffer_bytes=1000) as gw, client(gw.url) as c:
        with_length = await c.post("/a", content=big)

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 7000):
                yield big[i : i + 7000]

        without_length = await c.post("/b", content=pieces())
    assert with_length.json() == {"size": len(big), "chunked": False, "ok": True}
    assert without_length.json() == {"size": len(big), "chunked": True, "ok": True}


async def test_other_methods_skip_the_queue() -> None:
    gate = asyncio.Event()

    async def mixed(request: Received, writer: asyncio.StreamWriter) -> None:
        if request.method == "POST":
            await gate.wait()
        writer.write(response_bytes(200, request.method.encode()))

    async with replicas(mixed) as fakes, gateway(fakes, max_queue=0) as gw, client(gw.url) as c:
        post = asyncio.create_task(c.post("/infer", json={}))
        await wait_for(lambda: gw.gateway.dispatcher.inflight == 1)
        assert (await c.post("/infer", json={})).status_code == 429  # the slot is taken
        metadata = await c.get("/v2/models/sleep")  # goes at once, on another connection
        assert not post.done()
        gate.set()
        await post
    assert (metadata.status_code, metadata.text) == (200, "GET")


async def test_other_methods_without_a_ready_replica_get_503() -> None:
    async with replicas(json_handler()) as fakes, gateway(fakes) as gw, client(gw.url) as c:
        gw.gateway.registry.cordon("r0")
        answer = await c.get("/v2/health/ready")
    assert answer.status_code == 503
    assert answer.json()["error"] == "no replica is ready (1 known)"


async def test_admin_api_lists_adds_cordons_and_removes_replicas() -> None:
    gate = asyncio.Event()
    async with (
        replicas(held(gate), json_handler()) as fakes,
        gateway(fakes[:1]) as gw,
        client(gw.admin_url) as admin,
    ):
        listing = (await admin.get("/replicas")).json()
        assert listing["queued"] == 0
        assert listing["draining"] is False
        assert [(r["name"], r["state"], r["idle"]) for r in listing["replicas"]] == [("r0", "ready", True)]

        added = await admin.put("/replicas/extra", json={"url": fakes[1].url, "slots": 2})
        assert added.status_code == 200
        assert added.json()["slots"] == 2
        assert (await admin.put("/replicas/bad", json={"url": "ftp://x"})).status_code == 422
        assert (await admin.put("/replicas/bad", json={"url": "http://x:1", "extra": 1})).status_code == 422
        assert (await admin.put("/replicas/bad", content=b"{")).status_code == 422

        async with client(gw.url) as c:
            # r0 answered nothing yet, extra neither: the first registered takes the job.
            job = asyncio.create_task(c.post("/job", json={}))
            await wait_for(lambda: fakes[0].busy.is_set())
            busy = (await admin.post("/replicas/r0/cordon")).json()
            idle = (await admin.post("/replicas/extra/cordon")).json()
            assert (busy["state"], busy["outstanding"], busy["idle"]) == ("cordoned", 1, False)
            assert (idle["state"], idle["outstanding"], idle["idle"]) == ("cordoned", 0, True)
            gate.set()
            assert (await job).status_code == 200  # a cordoned replica finishes what it holds
            assert (await admin.post("/replicas/extra/uncordon")).json()["state"] == "ready"
            assert (await c.post("/next", json={})).headers["gpuscale-replica"] == "extra"

        removed = await admin.delete("/replicas/r0")
        assert (removed.status_code, removed.json()["name"]) == (200, "r0")
        assert (await admin.delete("/replicas/r0")).status_code == 404
        assert (await admin.post("/replicas/nope/cordon")).status_code == 404

        replaced = await admin.put("/replicas", json={"replicas": [{"name": "only", "url": fakes[1].url}]})
        assert [r["name"] for r in replaced.json()["replicas"]] == ["only"]
        dup = await admin.put("/replicas", json={"replicas": [{"name": "a", "url": "http://h:1"}] * 2})
        assert dup.status_code == 422
        assert "unique" in dup.json()["error"]

        assert (await admin.get("/nowhere")).status_code == 404
        wrong = await admin.post("/replicas")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, PUT")
        assert (await admin.get("/healthz")).json() == {"status": "live"}
        assert (await admin.get("/readyz")).status_code == 200


async def test_metrics_show_every_state_and_outcome_from_the_start() -> None:
    async with replicas(json_handler()) as fakes, gateway(fakes) as gw:
        samples = await metrics(gw.admin_url)
    for state in ("ready", "cordoned", "down"):
        assert f'gpuscale_gateway_replicas{{state="{state}"}}' in samples
    for outcome in ("ok", "rejected_full", "timeout", "unavailable", "upstream_error", "client_gone"):
        assert samples[f'gpuscale_gateway_requests_total{{outcome="{outcome}"}}'] == 0
    assert samples["gpuscale_slots"] == 1
    assert samples["gpuscale_queue_depth"] == 0
    assert "gpuscale_gateway_queue_wait_seconds_count" in samples
    assert "gpuscale_gateway_request_duration_seconds_count" in samples


async def test_drain_answers_everything_queued_then_asks_to_exit() -> None:
    async with one_running_rest_queued(3) as (gw, c, gate, exited, jobs):
        gw.gateway.on_signal("SIGTERM")
        refused = await c.post("/late", json={})
        async with client(gw.admin_url) as admin:
            assert (await admin.get("/readyz")).status_code == 503
        assert not exited.is_set()
        gate.set()
        answers = await asyncio.gather(*jobs)
        await asyncio.wait_for(exited.wait(), 5)
    assert (refused.status_code, refused.json()) == (503, {"error": "gateway draining"})
    assert refused.headers["connection"] == "close"
    assert [a.status_code for a in answers] == [200] * 3
    assert gw.gateway.exit_code == EXIT_OK


async def test_a_drain_that_runs_out_of_time_answers_503_and_exits_4() -> None:
    async with one_running_rest_queued(2, drain_seconds=0.2) as (gw, _, gate, exited, jobs):
        gw.gateway.on_signal("SIGTERM")
        answers = await asyncio.gather(*jobs)
        await asyncio.wait_for(exited.wait(), 5)
        gate.set()
    assert [a.status_code for a in answers] == [503, 503]
    assert all("drain time ran out (0.2 s)" in a.json()["error"] for a in answers)
    assert gw.gateway.exit_code == EXIT_DRAIN_INCOMPLETE


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"replicas": "ftp://x"}, "expected http://host:port"),
        ({"replicas": "a=http://h:1,a=http://h:2"}, "unique"),
        ({"replicas": "http://h:1/path"}, "no path"),
        ({"port": 9000, "admin_port": 9000}, "must differ from the clients. port"),
        ({"prefetch": 2}, "less than or equal to 1"),
        ({"queued_methods": "PO ST"}, "not an HTTP method"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from gpuscale_gateway.settings import GatewaySettings

    with pytest.raises(ValidationError, match=message):
        GatewaySettings(**settings)  # type: ignore[arg-type]


def test_replica_lists_name_bare_urls_by_host_and_port() -> None:
    from gpuscale_gateway.settings import GatewaySettings

    settings = GatewaySettings(
        replicas=" a=http://h:1 , http://127.0.0.1:8000,http://[::1]:9", queued_methods="post, put"
    )
    assert [(s.name, s.url) for s in settings.static_replicas] == [
        ("a", "http://h:1"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("[::1]:9", "http://[::1]:9"),
    ]
    assert settings.queued_method_set == {"POST", "PUT"}


async def test_a_second_signal_stops_at_once() -> None:
    async with one_running_rest_queued(3) as (gw, _, gate, exited, jobs):
        gw.gateway.on_signal("SIGTERM")
        gw.gateway.on_signal("SIGTERM")
        await asyncio.wait_for(exited.wait(), 5)
        answers = await asyncio.gather(*jobs)
        gate.set()
    assert [a.status_code for a in answers] == [503] * 3
    assert all(
        a.json()["error"] == "the gateway was stopped before this request was answered" for a in answers
    )
    assert gw.gateway.exit_code == EXIT_DRAIN_INCOMPLETE


async def test_discoveries_are_plug_ins_that_feed_the_registry() -> None:
    from gpuscale_gateway.discovery import Discovery, StaticDiscovery
    from gpuscale_gateway.registry import Registry
    from gpuscale_gateway.server import running
    from gpuscale_gateway.settings import GatewaySettings, ReplicaSpec

    class Watcher:
        """Stands in for a Kubernetes watch: adds a replica later, and keeps running."""

        def __init__(self, url: str) -> None:
            self.url = url
            self.cancelled = False

        async def run(self, registry: Registry) -> None:
            await asyncio.sleep(0.05)
            registry.add("watched", self.url, slots=1)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise

    async with replicas(json_handler(), json_handler()) as (static, watched):
        watcher = Watcher(watched.url)
        discoveries: list[Discovery] = [
            StaticDiscovery([ReplicaSpec(name="static", url=static.url)]),
            watcher,
        ]
        settings = GatewaySettings(port=0, admin_port=0, log_level="warning")
        async with running(settings, discoveries) as gw, client(gw.url) as c:
            await wait_for(lambda: "watched" in gw.gateway.registry)
            gw.gateway.registry.cordon("static")
            assert (await c.post("/x", json={})).headers["gpuscale-replica"] == "watched"
        assert watcher.cancelled
