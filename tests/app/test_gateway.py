"""The gateway as a real process in front of real pod servers on loopback: one FIFO queue over one-slot
pods, replicas that refuse, die or drain, streamed bodies, requests that skip the queue, the gateway's
own drain, and its CLI errors."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from gpuscale.podproc import GatewayProcess
from gpuscale.promtext import scrape

from tests.app.conftest import GPUSCALE, INFER, StartGateway, StartPod, replicas, sleep_body, staggered
from tests.conftest import free_port, wait_until


def queue_depth(gateway: GatewayProcess) -> float:
    return scrape(gateway.admin_url or "")["gpuscale_queue_depth"]


def in_background(fn: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    """Run `fn` on a thread now; the returned callable waits for its answer."""
    result: list[httpx.Response | BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join() -> httpx.Response:
        thread.join(60)
        answer = result[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return join


def test_two_one_slot_pods_serve_two_at_a_time_in_arrival_order(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    pods = [start_pod(), start_pod()]
    gateway = start_gateway("--replicas", f"a={pods[0].url},b={pods[1].url}")
    answers = asyncio.run(staggered(gateway.url, [sleep_body(0.3)] * 6, gap=0.05))
    assert [a.status_code for a in answers] == [200] * 6
    params = [a.json()["parameters"] for a in answers]
    starts = [p["started_at"] for p in params]
    assert starts == sorted(starts), "a later request started before an earlier one"
    assert {a.headers["gpuscale-replica"] for a in answers} == {"a", "b"}
    # Never more than two jobs at once (one per pod), and every pod's jobs one after the other.
    spans = [(p["started_at"], p["started_at"] + p["service_seconds"]) for p in params]
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start + 0.002 and e > start + 0.002)
        assert running <= 2
    # Requests 3..6 waited in the gateway, not in the pods: each pod had one at a time.
    for answer in answers:
        assert answer.json()["parameters"]["queue_seconds"] < 0.05
    samples = scrape(gateway.admin_url or "")
    assert samples['gpuscale_gateway_requests_total{outcome="ok"}'] == 6


def test_a_refused_replica_is_marked_down_and_comes_back_when_a_pod_listens(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    live = start_pod()
    port = free_port("127.0.0.1")
    gateway = start_gateway("--replicas", f"dead=http://127.0.0.1:{port},live={live.url}")
    answer = httpx.post(gateway.url + INFER, json=sleep_body(0), timeout=10)
    assert answer.status_code == 200
    assert answer.headers["gpuscale-replica"] == "live"
    assert replicas(gateway)["dead"]["state"] == "down"
    assert scrape(gateway.admin_url or "")["gpuscale_gateway_retries_total"] == 1
    # A pod starts on that address: the health probe brings the replica back.
    start_pod("--port", str(port))
    wait_until(lambda: replicas(gateway)["dead"]["state"] == "ready", timeout=10)
    answers = asyncio.run(staggered(gateway.url, [sleep_body(0.3)] * 2, gap=0.02))
    assert {a.headers["gpuscale-replica"] for a in answers} == {"dead", "live"}


def test_a_pod_killed_mid_request_gives_502_and_the_next_requests_go_to_the_other(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    doomed, survivor = start_pod(), start_pod()
    gateway = start_gateway("--replicas", f"a={doomed.url},b={survivor.url}")
    pending = in_background(lambda: httpx.post(gateway.url + INFER, json=sleep_body(30), timeout=60))
    wait_until(lambda: replicas(gateway)["a"]["outstanding"] == 1)
    doomed.proc.kill()
    answer = pending()
    assert answer.status_code == 502
    assert answer.json()["error"].startswith(
        "replica a failed after the request was sent; it may have run, so it was not retried: "
    )
    assert replicas(gateway)["a"]["state"] == "down"
    following = [httpx.post(gateway.url + INFER, json=sleep_body(0), timeout=10) for _ in range(3)]
    assert [(f.status_code, f.headers["gpuscale-replica"]) for f in following] == [(200, "b")] * 3
    assert scrape(gateway.admin_url or "")['gpuscale_gateway_requests_total{outcome="upstream_error"}'] == 1


def test_a_draining_pod_refuses_and_the_gateway_sends_the_request_elsewhere(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    draining, other = start_pod(), start_pod()
    gateway = start_gateway("--replicas", f"a={draining.url},b={other.url}")
    # A job sent straight to the pod keeps it alive (and draining) after SIGTERM; the gateway does not
    # know of it, so `a` (first registered, nothing outstanding) is its first choice.
    job = in_background(lambda: httpx.post(draining.url + INFER, json=sleep_body(1.5), timeout=30))
    wait_until(lambda: httpx.get(draining.url + "/metrics").text.count("gpuscale_inflight_requests 1.0") == 1)
    draining.terminate()
    wait_until(lambda: httpx.get(draining.ready_url).status_code == 503)
    answer = httpx.post(gateway.url + INFER, json=sleep_body(0), timeout=10)
    assert answer.status_code == 200
    assert answer.headers["gpuscale-replica"] == "b"
    assert replicas(gateway)["a"]["state"] == "down"
    assert scrape(gateway.admin_url or "")["gpuscale_gateway_retries_total"] == 1
    assert job().status_code == 200  # the pod's own drain answered what it had admitted


def test_bodies_larger_than_the_buffer_stream_through(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    pod = start_pod()
    gateway = start_gateway("--replicas", pod.url, "--buffer-bytes", "64")
    request_id = "x" * 20_000
    answer = httpx.post(gateway.url + INFER, json=sleep_body(0, id=request_id), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["id"] == request_id

    body = httpx.Request("POST", "/", json=sleep_body(0, id=request_id)).content

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    chunked = httpx.post(
        gateway.url + INFER, content=pieces(), headers={"content-type": "application/json"}, timeout=10
    )
    assert chunked.status_code == 200
    assert chunked.json()["id"] == request_id


def test_metadata_and_health_requests_skip_the_queue(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    pod = start_pod()
    gateway = start_gateway("--replicas", pod.url)

    async def scenario() -> tuple[httpx.Response, bool, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            jobs = [asyncio.create_task(client.post(INFER, json=sleep_body(1.0))) for _ in range(2)]
            await asyncio.to_thread(wait_until, lambda: queue_depth(gateway) == 1)
            metadata = await client.get("/v2/models/sleep")
            queued_still = not jobs[1].done()
            return metadata, queued_still, await asyncio.gather(*jobs)

    metadata, queued_still, jobs = asyncio.run(scenario())
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "sleep"
    assert queued_still, "the metadata request waited behind the queued job"
    assert [j.status_code for j in jobs] == [200, 200]


def test_sigterm_drains_every_queued_request_then_exits_0(
    start_pod: StartPod, start_gateway: StartGateway
) -> None:
    pod = start_pod()
    gateway = start_gateway("--replicas", pod.url)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            jobs = [asyncio.create_task(client.post(INFER, json=sleep_body(0.3))) for _ in range(4)]
            await asyncio.to_thread(wait_until, lambda: queue_depth(gateway) == 3)
            gateway.terminate()
            await asyncio.to_thread(wait_until, lambda: httpx.get(gateway.ready_url).status_code == 503)
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as late:
                refused = await late.post(INFER, json=sleep_body(0))
            return await asyncio.gather(*jobs), refused

    answers, refused = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 4
    assert (refused.status_code, refused.json()) == (503, {"error": "gateway draining"})
    assert gateway.wait(30) == 0
    assert any("drained: every request was answered" in line for line in gateway.output)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--prefetch", "2"], {}, "--prefetch: Input should be less than or equal to 1"),
        (["--replicas", "ftp://x"], {}, "--replicas: Value error, expected http://host:port, got 'ftp://x'"),
        (["--max-queue", "x"], {}, "argument --max-queue: invalid int value: 'x'"),
        (
            [],
            {"GPUSCALE_GATEWAY_QUEUE_TIMEOUT_SECONDS": "0"},
            "GPUSCALE_GATEWAY_QUEUE_TIMEOUT_SECONDS: Input",
        ),
        (["--log-level", "loud"], {}, "invalid choice: 'loud'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [GPUSCALE, "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpuscale gateway: error: ")
    assert message in lines[0]


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gpuscale_gateway", "--port", str(port), "--admin-port", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert (
        lines[0]
        == f"python -m gpuscale_gateway: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
