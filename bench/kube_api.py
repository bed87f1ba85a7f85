"""Kubernetes API test server benchmarks: request throughput (GET, PATCH, LIST) and watch fan-out latency.

A `KubeTestServer` runs in this process on its own thread and event loop, seeded with 1,000 ConfigMaps;
the client is asyncio + aiohttp on the main thread. Server and client share one interpreter (one GIL),
as they do when a test drives the server, so the figures are what a test sees, not what a
multi-process server could reach. Prints each table, writes bench/results/kube_api.json and fills the
`<!-- bench:kube-api -->` block in docs/kube-test-server.md.

Run: `.venv/bin/python -m bench.kube_api` (`--only requests`, `--only watch-fanout`, `--print-only`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from gpuscale.markdown import table

from bench.pod_server import log, ms, pct, sections_cli
from kube_test_server.server import KubeTestServer

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "kube-test-server.md"
RESULTS = ROOT / "bench" / "results" / "kube_api.json"

OBJECTS = 1_000
CONCURRENCY = 8
SECONDS = 3.0
WARMUP_SECONDS = 0.3
WATCHERS = 10
UPDATES = 200
PACE = 0.010
COLLECTION = "/api/v1/namespaces/default/configmaps"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def config_map(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name(i), "namespace": "default", "labels": {"bench": "kube-api"}},
        "data": {"n": "0", "payload": "x" * 64},
    }


def name(i: int) -> str:
    return f"cm-{i % OBJECTS:04d}"


@contextmanager
def seeded_server() -> Iterator[KubeTestServer]:
    with KubeTestServer() as kube:
        kube.apply(*(config_map(i) for i in range(OBJECTS)))
        yield kube


# --- 1. requests per second ----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] | None = None


def get_one(i: int) -> Call:
    return Call("GET", f"{COLLECTION}/{name(i)}")


def patch_one(i: int) -> Call:
    # Never the seeded "0": a patch that changes nothing is a no-op, with no new version and no event.
    body = json.dumps({"data": {"n": str(i + 1)}}).encode()
    return Call("PATCH", f"{COLLECTION}/{name(i)}", body, MERGE_PATCH)


def list_all(_: int) -> Call:
    return Call("GET", COLLECTION)


@dataclass
class Load:
    latencies: list[float]
    errors: int
    wall: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall


async def hammer(base: str, make: Callable[[int], Call], seconds: float, concurrency: int) -> Load:
    """`concurrency` tasks, each sending its next request as soon as the last one's body is read.

    Bodies are read in full but not parsed: parsing is the client's cost, and it would share the
    server's GIL here."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker(first: int) -> None:
            nonlocal errors
            i = first
            while time.perf_counter() < deadline:
                call = make(i)
                sent = time.perf_counter()
                async with session.request(call.method, call.path, data=call.body, headers=call.headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - sent)
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    return Load(latencies, errors, wall)


def requests(seconds: float = SECONDS, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    log(f"requests: GET, PATCH and LIST over {seconds:g} s each, {concurrency} concurrent, {OBJECTS} objects")
    operations = {
        "GET one ConfigMap": get_one,
        "PATCH one ConfigMap (merge patch)": patch_one,
        f"LIST all {OBJECTS:,} ConfigMaps": list_all,
    }
    figures: dict[str, dict[str, float]] = {}
    with seeded_server() as kube:
        for label, make in operations.items():
            asyncio.run(hammer(kube.url, make, WARMUP_SECONDS, concurrency))
            load = asyncio.run(hammer(kube.url, make, seconds, concurrency))
            kube.clear_evidence()  # the server records every request; keep that list from growing all run
            figures[label] = {
                "requests": len(load.latencies),
                "errors": load.errors,
                "rps": load.rps,
                "p50": pct(load.latencies, 50),
                "p99": pct(load.latencies, 99),
            }
            log(f"  {label}: {load.rps:,.0f} req/s")
    rows = [
        (label, f"{f['rps']:,.0f}", ms(f["p50"]), ms(f["p99"]), f"{f['requests']:,.0f}", f"{f['errors']:.0f}")
        for label, f in figures.items()
    ]
    markdown = table(["request", "req/s", "p50", "p99", "requests", "errors"], rows)
    markdown += (
        f"\n\nEach row: {seconds:g} s of {concurrency} concurrent requests (asyncio + aiohttp, {concurrency} "
        f"keep-alive connections) after a {WARMUP_SECONDS:g} s warm-up, against {OBJECTS:,} seeded "
        "ConfigMaps in `default`; GET and PATCH go round the objects. Every request is an HTTP "
        "round trip on loopback; bodies are read, not parsed."
    )
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "objects": OBJECTS,
        "operations": figures,
        "markdown": markdown,
    }


# --- 2. watch fan-out ----------------------------------------------------------------------------


async def fan_out(
    base: str, watchers: int, updates: int, pace: float
) -> tuple[list[float], list[float], int]:
    """Per delivered event: seconds from the write's response, and from its request, to a watcher's read."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    connector = aiohttp.TCPConnector(limit=watchers + 1)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        async with session.get(COLLECTION, params={"limit": "1"}) as r:
            since = (await r.json())["metadata"]["resourceVersion"]
        arrivals: list[dict[str, float]] = [{} for _ in range(watchers)]
        subscribed = [asyncio.Event() for _ in range(watchers)]

        async def watch(k: int) -> None:
            params = {"watch": "true", "resourceVersion": since}
            async with session.get(COLLECTION, params=params) as r:
                # The server subscribes before it sends the headers: from here no write is missed.
                subscribed[k].set()
                async for line in r.content:
                    # Stamped before parsing, so one watcher's JSON work is not charged to its event.
                    read = time.perf_counter()
                    event = json.loads(line)
                    arrivals[k][event["object"]["metadata"]["resourceVersion"]] = read
                    if len(arrivals[k]) >= updates:
                        return

        streams = [asyncio.create_task(watch(k)) for k in range(watchers)]
        await asyncio.gather(*(s.wait() for s in subscribed))
        answered: dict[str, float] = {}
        asked: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(updates):
            # Paced against the schedule, not after each answer, so one slow write does not shift the rest.
            await asyncio.sleep(max(0.0, start + i * pace - time.perf_counter()))
            call = patch_one(i)
            sent = time.perf_counter()
            async with session.patch(call.path, data=call.body, headers=call.headers) as r:
                raw = await r.read()
                done = time.perf_counter()
            version = json.loads(raw)["metadata"]["resourceVersion"]
            answered[version], asked[version] = done, sent
        _, pending = await asyncio.wait(streams, timeout=10)
        for stream in pending:
            stream.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    from_response = [seen[v] - answered[v] for seen in arrivals for v in answered if v in seen]
    from_request = [seen[v] - asked[v] for seen in arrivals for v in asked if v in seen]
    return from_response, from_request, len(from_response)


def watch_fanout(watchers: int = WATCHERS, updates: int = UPDATES, pace: float = PACE) -> dict[str, Any]:
    log(f"watch-fanout: {watchers} watchers, {updates} merge patches every {pace * 1000:g} ms")
    with seeded_server() as kube:
        from_response, from_request, delivered = asyncio.run(fan_out(kube.url, watchers, updates, pace))
    expected = watchers * updates
    stats = {
        label: {
            "p50": pct(values, 50),
            "p95": pct(values, 95),
            "p99": pct(values, 99),
            "max": max(values),
            "min": min(values),
        }
        for label, values in (("from_response", from_response), ("from_request", from_request))
    }
    rows = [
        (label, ms(s["p50"]), ms(s["p95"]), ms(s["p99"]), ms(s["max"]), ms(s["min"]))
        for label, s in (
            ("write's response → watcher", stats["from_response"]),
            ("write's request → watcher", stats["from_request"]),
        )
    ]
    markdown = table(["latency", "p50", "p95", "p99", "max", "min"], rows)
    markdown += (
        f"\n\n{watchers} watch streams on the `default` ConfigMaps (from the list's resourceVersion), "
        f"{updates} merge patches paced every {pace * 1000:g} ms round the {OBJECTS:,} objects: "
        f"{delivered:,} of {expected:,} events delivered. Per event and watcher, the time from the write's "
        "HTTP answer (or its request) until the watcher read the event's line. Watchers and writer share "
        "the client's event loop, so the figures include its turns."
    )
    if stats["from_response"]["min"] < 0:
        markdown += (
            " The server queues an event before it answers the write, so a watcher can read it before the "
            "writer has read its answer: the negative minimum."
        )
    return {
        "watchers": watchers,
        "updates": updates,
        "pace_seconds": pace,
        "delivered": delivered,
        "expected": expected,
        "latency": stats,
        "markdown": markdown,
    }


# --- report --------------------------------------------------------------------------------------


SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {"requests": requests, "watch-fanout": watch_fanout}


def main(argv: Sequence[str] | None = None) -> int:
    # No load tools: the client is aiohttp in this process.
    return sections_cli(argv, __doc__, SECTIONS, RESULTS, DOC, tools=False)


if __name__ == "__main__":
    raise SystemExit(main())
