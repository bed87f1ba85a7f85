"""The pod server as a real process on loopback: serialization, the bound, disconnects, drain, readiness
and metrics under load."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import time

import httpx
import pytest
from gpuscale.promtext import parse_samples, scrape

from inference_app.exit_codes import EXIT_DRAIN_INCOMPLETE
from inference_app.models.matmul import reference_checksum
from tests.app.conftest import INFER, StartPod, sleep_body, staggered
from tests.conftest import wait_until


def test_one_slot_serializes_requests_in_arrival_order(start_pod: StartPod) -> None:
    url = start_pod().url
    answers = asyncio.run(staggered(url, [sleep_body(0.3)] * 5))
    assert [a.status_code for a in answers] == [200] * 5
    params = [a.json()["parameters"] for a in answers]
    starts = [p["started_at"] for p in params]
    assert starts == sorted(starts), "started out of arrival order"
    for before, after in itertools.pairwise(params):
        # The next job starts only once the one before has finished: never two on the slot.
        assert after["started_at"] >= before["started_at"] + before["service_seconds"] - 0.002
    # The k-th request waited for the k-1 before it.
    waits = [p["queue_seconds"] for p in params]
    assert waits[0] < 0.1
    assert waits[-1] == pytest.approx(4 * 0.3 - 4 * 0.03, abs=0.15)


def test_two_slots_run_two_at_once(start_pod: StartPod) -> None:
    url = start_pod("--slots", "2").url
    answers = asyncio.run(staggered(url, [sleep_body(0.4)] * 4, gap=0.01))
    waits = sorted(a.json()["parameters"]["queue_seconds"] for a in answers)
    assert waits[1] < 0.1  # the first two ran at once
    assert waits[2] > 0.25  # the next two waited for a free slot


def test_queue_bound_answers_429_with_retry_after(start_pod: StartPod) -> None:
    url = start_pod("--max-queue", "2", "--sleep-seconds", "0.5").url
    answers = asyncio.run(staggered(url, [sleep_body(0.5)] * 6, gap=0.02))
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 429, 429, 429]
    for refused in answers[3:]:
        assert int(refused.headers["retry-after"]) >= 1
        assert "1 slot(s) busy and 2 request(s) queued" in refused.json()["error"]
    samples = scrape(url)
    assert samples['gpuscale_requests_total{outcome="rejected_full"}'] == 3
    assert samples['gpuscale_requests_total{outcome="ok"}'] == 3


def _raw_request(url: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_a_client_that_leaves_while_queued_never_runs(start_pod: StartPod) -> None:
    url = start_pod().url

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.create_task(client.post(INFER, json=sleep_body(0.6)))
            await asyncio.sleep(0.1)
            leaver = _raw_request(url, b'{"parameters": {"seconds": 5}}')
            await asyncio.sleep(0.1)
            last = asyncio.create_task(client.post(INFER, json=sleep_body(0.1)))
            await asyncio.sleep(0.1)
            assert scrape(url)["gpuscale_queue_depth"] == 2
            leaver.close()  # the client goes away while its request waits
            await asyncio.to_thread(wait_until, lambda: scrape(url)["gpuscale_queue_depth"] == 1, 5.0)
            return [await first, await last]

    first, last = asyncio.run(scenario())
    assert (first.status_code, last.status_code) == (200, 200)
    # The 5 s job never ran: the last request started right after the first finished.
    after_first = first.json()["parameters"]["started_at"] + first.json()["parameters"]["service_seconds"]
    assert last.json()["parameters"]["started_at"] - after_first < 0.1
    samples = scrape(url)
    assert samples['gpuscale_requests_total{outcome="cancelled"}'] == 1
    assert samples["gpuscale_service_seconds_count"] == 2


def test_drain_answers_every_admitted_request_then_exits_0(start_pod: StartPod) -> None:
    pod = start_pod()
    url = pod.url

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            admitted = [asyncio.create_task(client.post(INFER, json=sleep_body(0.3))) for _ in range(4)]
            await asyncio.sleep(0.15)
            pod.terminate()
            await asyncio.sleep(0.1)
            ready = await client.get("/v2/health/ready")
            late = await client.post(INFER, json=sleep_body(0.1))
            return list(await asyncio.gather(*admitted)), ready, late

    admitted, ready, late = asyncio.run(scenario())
    assert [r.status_code for r in admitted] == [200] * 4
    assert (ready.status_code, ready.json()) == (503, {"ready": False, "reason": "draining"})
    assert late.status_code == 503
    assert late.json() == {"error": "draining"}
    assert late.headers["connection"] == "close"
    assert pod.wait(10) == 0
    assert any("drained: every admitted request was answered" in line for line in pod.output)


def test_drain_deadline_answers_the_rest_503_and_exits_4(start_pod: StartPod) -> None:
    pod = start_pod("--drain-seconds", "0.5")

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=pod.url, timeout=30) as client:
            admitted = [asyncio.create_task(client.post(INFER, json=sleep_body(3))) for _ in range(3)]
            await asyncio.sleep(0.15)
            pod.terminate()
            return list(await asyncio.gather(*admitted))

    started = time.monotonic()
    answers = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [503] * 3
    for answer in answers:
        assert answer.json()["error"] == "drain time ran out (0.5 s) before this request finished"
    assert pod.wait(10) == EXIT_DRAIN_INCOMPLETE
    assert time.monotonic() - started < 3, "the process waited for the running job"


def test_a_drain_does_not_wait_for_a_job_whose_client_left(start_pod: StartPod) -> None:
    pod = start_pod("--drain-seconds", "30")
    leaver = _raw_request(pod.url, b'{"parameters": {"seconds": 20}}')
    wait_until(lambda: scrape(pod.url)["gpuscale_inflight_requests"] == 1)
    leaver.close()
    wait_until(lambda: scrape(pod.url)['gpuscale_requests_total{outcome="abandoned"}'] == 1)
    started = time.monotonic()
    pod.terminate()
    assert pod.wait(10) == 0
    assert time.monotonic() - started < 5, "the drain waited for a job nobody wants"


def test_sigterm_as_soon_as_it_listens_is_a_clean_stop(start_pod: StartPod) -> None:
    # The "listening on" line is what a parent waits for: from then on a signal must drain, not kill.
    for _ in range(3):
        pod = start_pod(wait_ready=False)
        pod.terminate()
        assert pod.wait(10) == 0


def test_a_second_signal_stops_at_once(start_pod: StartPod) -> None:
    pod = start_pod()

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=pod.url, timeout=30) as client:
            admitted = asyncio.create_task(client.post(INFER, json=sleep_body(20)))
            await asyncio.sleep(0.15)
            pod.terminate()
            await asyncio.sleep(0.2)
            pod.proc.send_signal(signal.SIGINT)
            return await admitted

    answer = asyncio.run(scenario())
    assert answer.status_code == 503
    assert "stopped before this request finished" in answer.json()["error"]
    assert pod.wait(10) == EXIT_DRAIN_INCOMPLETE


def test_readiness_turns_on_after_the_load(start_pod: StartPod) -> None:
    pod = start_pod("--load-seconds", "1.0", wait_ready=False)
    ready = httpx.get(f"{pod.url}/v2/health/ready")
    assert (ready.status_code, ready.json()["reason"]) == (503, "loading model")
    assert httpx.get(f"{pod.url}/v2/health/live").status_code == 200
    assert scrape(pod.url)["gpuscale_ready"] == 0
    pod.wait_ready(10)
    assert scrape(pod.url)["gpuscale_ready"] == 1


def test_metrics_and_health_answer_while_the_slot_is_busy_and_the_queue_full(start_pod: StartPod) -> None:
    url = start_pod("--max-queue", "3").url

    async def scenario() -> tuple[dict[str, float], int, list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            jobs = [asyncio.create_task(client.post(INFER, json=sleep_body(1.0))) for _ in range(5)]
            await asyncio.sleep(0.2)
            during = parse_samples((await client.get("/metrics")).text)
            ready = (await client.get("/v2/health/ready")).status_code
            return during, ready, [r.status_code for r in await asyncio.gather(*jobs)]

    during, ready, statuses = asyncio.run(scenario())
    # Answered while the first 1 s job still held the slot and three more waited.
    assert (during["gpuscale_inflight_requests"], during["gpuscale_queue_depth"]) == (1, 3)
    assert during["gpuscale_slots"] == 1
    assert ready == 200
    assert sorted(statuses) == [200, 200, 200, 200, 429]
    after = scrape(url)
    assert (after["gpuscale_inflight_requests"], after["gpuscale_queue_depth"]) == (0, 0)
    assert after["gpuscale_request_duration_seconds_count"] == 4
    assert after["gpuscale_service_seconds_sum"] == pytest.approx(4.0, abs=0.1)
    assert after["gpuscale_slot_busy_seconds_total"] == pytest.approx(4.0, abs=0.1)


def test_matmul_on_numpy_answers_a_verifiable_checksum(start_pod: StartPod) -> None:
    url = start_pod("--model", "matmul", "--matmul-backend", "numpy", "--matmul-size", "32").url
    body = {"parameters": {"size": 96, "iterations": 3, "seed": 11}}
    answer = httpx.post(f"{url}/v2/models/matmul/infer", json=body, timeout=30).json()
    assert answer["parameters"]["backend"] == "numpy"
    assert answer["outputs"][0]["data"][0] == pytest.approx(reference_checksum(96, 3, 11), rel=1e-4)
