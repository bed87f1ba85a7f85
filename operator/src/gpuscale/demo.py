"""`gpuscale demo`: one pod server, one slot, a burst of requests: watch the queue serialize them,
the bound refuse the overflow, and a SIGTERM drain answer everything it admitted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx

from gpuscale.podproc import PodProcess
from gpuscale.promtext import parse_samples


@dataclass
class Answer:
    index: int
    status: int
    sent: float
    latency: float
    queue_seconds: float | None = None
    service_seconds: float | None = None
    retry_after: str | None = None


async def _send(client: httpx.AsyncClient, index: int, delay: float, seconds: float, t0: float) -> Answer:
    # A small stagger fixes the arrival order, so FIFO order is visible in the output.
    await asyncio.sleep(delay)
    sent = time.perf_counter()
    response = await client.post("/v2/models/sleep/infer", json={"parameters": {"seconds": seconds}})
    answer = Answer(index, response.status_code, sent - t0, time.perf_counter() - sent)
    if response.status_code == 200:
        params = response.json()["parameters"]
        answer.queue_seconds = params["queue_seconds"]
        answer.service_seconds = params["service_seconds"]
    answer.retry_after = response.headers.get("retry-after")
    return answer


async def _watch(client: httpx.AsyncClient, t0: float, stop: asyncio.Event, seen: list[float]) -> None:
    last = None
    while not stop.is_set():
        samples = parse_samples((await client.get("/metrics")).text)
        state = (int(samples["gpuscale_queue_depth"]), int(samples["gpuscale_inflight_requests"]))
        seen.append(samples["gpuscale_queue_depth"])
        if state != last:
            print(f"  t={time.perf_counter() - t0:5.2f} s   queued {state[0]:2d}   running {state[1]}")
            last = state
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _burst(url: str, requests: int, seconds: float) -> list[Answer]:
    limits = httpx.Limits(max_connections=requests + 4)
    async with (
        httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=5) as watcher,
    ):
        t0 = time.perf_counter()
        stop = asyncio.Event()
        depths: list[float] = []
        watch = asyncio.create_task(_watch(watcher, t0, stop, depths))
        answers = await asyncio.gather(*(_send(client, i, i * 0.01, seconds, t0) for i in range(requests)))
        stop.set()
        await watch
        total = time.perf_counter() - t0
    print()
    print("  req  sent at  status  queue wait  service  latency")
    for a in answers:
        if a.status == 200:
            print(
                f"  {a.index + 1:3d}  {a.sent:6.2f}s  {a.status:6d}  {a.queue_seconds:9.2f}s"
                f"  {a.service_seconds:6.2f}s  {a.latency:6.2f}s"
            )
        else:
            why = f"refused at once, Retry-After {a.retry_after} s"
            print(f"  {a.index + 1:3d}  {a.sent:6.2f}s  {a.status:6d}  {why}")
    served = [a for a in answers if a.status == 200]
    print(
        f"\n  {len(served)} answered one at a time in arrival order, "
        f"{len(answers) - len(served)} refused with 429; "
        f"deepest queue seen: {int(max(depths, default=0))}; burst took {total:.2f} s."
    )
    return answers


async def _drain(pod: PodProcess, seconds: float) -> int:
    url = pod.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"parameters": {"seconds": seconds}}
        sends = [asyncio.create_task(client.post("/v2/models/sleep/infer", json=body)) for _ in range(3)]
        await asyncio.sleep(0.2)
        print("  3 requests admitted (1 running, 2 queued); sending SIGTERM")
        pod.terminate()
        await asyncio.sleep(0.1)
        ready = await client.get("/v2/health/ready")
        late = await client.post("/v2/models/sleep/infer", json=body)
        print(f"  /v2/health/ready -> {ready.status_code} {ready.json()}")
        print(f"  a new request    -> {late.status_code} {late.json()}")
        statuses = [r.status_code for r in await asyncio.gather(*sends)]
        print(f"  the 3 admitted   -> {statuses}")
    code = await asyncio.to_thread(pod.wait, 60)
    print(f"  server exited with code {code}")
    return code


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=12, help="burst size (default 12)")
    parser.add_argument("--seconds", type=float, default=0.5, help="job length in seconds (default 0.5)")
    parser.add_argument("--max-queue", type=int, default=8, help="the pod's queue bound (default 8)")


def run_demo(args: argparse.Namespace) -> int:
    print(f"Starting a pod server: sleep model, 1 slot, queue bound {args.max_queue} ...")
    options = {"--sleep-seconds": args.seconds, "--max-queue": args.max_queue, "--log-level": "warning"}
    pod = PodProcess(["--model", "sleep", *(str(x) for kv in options.items() for x in kv)])
    try:
        url = pod.wait_ready()
        print(f"Ready at {url}. Sending {args.requests} requests of {args.seconds:g} s at once:\n")
        asyncio.run(_burst(url, args.requests, args.seconds))
        print("\nGraceful drain:")
        code = asyncio.run(_drain(pod, args.seconds))
    finally:
        pod.kill()
    return 0 if code == 0 else 1
