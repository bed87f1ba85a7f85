"""`gpuscale load`: send load to a URL, closed loop (N workers, like hey) or open loop (R arrivals per
second whatever the answers do), sample a /metrics endpoint meanwhile, and report or plot the run.

The engine is `generate(spec)`; what it returns (and the statistics) live in gpuscale.loadstats."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gpuscale.loadstats import (
    CANCELLED,
    LoadResult,
    LoadSpec,
    MetricsSample,
    RequestRecord,
    histogram,
    percentiles,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "LoadResult",
    "LoadSpec",
    "MetricsSample",
    "RequestRecord",
    "add_arguments",
    "arrival_times",
    "generate",
    "histogram",
    "main",
    "percentiles",
    "run",
]

REPLICA_HEADER = "gpuscale-replica"
_CONNECT_ERRORS = ("ConnectError", "ConnectTimeout")


def arrival_times(rate: float, *, poisson: bool = False, seed: int | None = None) -> Iterator[float]:
    """Open-loop arrival times in seconds from the start, without end: evenly spaced from 0, or a Poisson
    process (exponential gaps, reproducible with `seed`)."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if poisson:
        rng = random.Random(seed)
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            yield t
    else:
        i = 0
        while True:
            yield i / rate
            i += 1


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _checkout_transport(pool_size: int) -> httpx.AsyncBaseTransport:
    """A transport that lends each request a connection of its own from a free list.

    httpcore's pool scans every connection it holds, with a syscall each, on every request: at 100
    connections that alone costs milliseconds per request, so the generator, not the server, would set
    the latencies, and open-loop backlogs of thousands would stall it. Here each request borrows a
    one-connection transport (the most recently returned, whose connection is still warm) in O(1)."""
    import httpx

    ssl_context = httpx.create_ssl_context()  # once: one per connection would reread the CA bundle
    single = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    class Released(httpx.AsyncByteStream):
        def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
            self._stream, self._release = stream, release

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._release()

    class Checkout(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._free: list[httpx.AsyncHTTPTransport] = []
            self._all: list[httpx.AsyncHTTPTransport] = []

        def _borrow(self) -> httpx.AsyncHTTPTransport:
            if self._free:
                return self._free.pop()
            if len(self._all) >= pool_size:  # the callers bound their requests; this is a backstop
                raise httpx.PoolTimeout(f"more than {pool_size} requests at once")
            transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=single)
            self._all.append(transport)
            return transport

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            transport = self._borrow()
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    self._free.append(transport)

            try:
                response = await transport.handle_async_request(request)
            except BaseException:
                release()
                raise
            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                status_code=response.status_code,
                headers=response.headers,
                stream=Released(response.stream, release),
                extensions=response.extensions,
            )

        async def aclose(self) -> None:
            for transport in self._all:
                await transport.aclose()

    return Checkout()


class _Run:
    """The state one run shares between its senders, the sampler and the progress line."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.t0 = time.perf_counter()
        self.issued = 0
        self.outstanding = 0
        self.transport_errors = 0
        self.records: list[RequestRecord] = []
        self.samples: list[MetricsSample] = []
        self.scrape_errors = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def claim(self, at: float) -> bool:
        """May one more request start at `at` seconds? Counts it if so."""
        spec = self.spec
        if spec.requests is not None and self.issued >= spec.requests:
            return False
        if spec.duration is not None and at >= spec.duration:
            return False
        self.issued += 1
        return True

    async def send(self, client: httpx.AsyncClient) -> None:
        import httpx

        request = client.build_request(self.spec.method, self.spec.url, content=self.spec.body)
        status, error, replica = 0, None, None
        self.outstanding += 1
        start = time.perf_counter()
        try:
            response = await client.send(request)  # reads the whole body before it returns
            status, replica = response.status_code, response.headers.get(REPLICA_HEADER)
        except (httpx.HTTPError, OSError) as exc:
            error = _describe(exc)
            self.transport_errors += 1
        except asyncio.CancelledError:
            error = CANCELLED
            raise
        finally:
            end = time.perf_counter()
            self.outstanding -= 1
            self.records.append(RequestRecord(start - self.t0, end - start, status, error, replica))

    async def closed_loop(self, client: httpx.AsyncClient) -> None:
        async def worker() -> None:
            while self.claim(self.elapsed()):
                await self.send(client)

        await asyncio.gather(*(worker() for _ in range(self.spec.concurrency)))

    async def open_loop(self, client: httpx.AsyncClient) -> None:
        assert self.spec.rate is not None
        room = asyncio.Semaphore(self.spec.max_outstanding)
        tasks: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            room.release()

        try:
            for at in arrival_times(self.spec.rate, poisson=self.spec.poisson, seed=self.spec.seed):
                if not self.claim(at):
                    break
                # Behind schedule (a slow loop, or the outstanding cap), it sends at once to catch up.
                if (delay := self.t0 + at - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                await room.acquire()
                task = asyncio.create_task(self.send(client))
                tasks.add(task)
                task.add_done_callback(done)
            await asyncio.gather(*tasks)
        finally:
            # Stopped early: the requests in flight end as "cancelled" records, none is left running.
            pending = list(tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def progress_line(self) -> str:
        errors = self.transport_errors
        return (
            f"sent {self.issued}  answered {len(self.records) - errors}  outstanding {self.outstanding}"
            + (f"  transport errors {errors}" if errors else "")
            + f"  elapsed {self.elapsed():.1f} s"
        )

    async def show_progress(self, stream: IO[str]) -> None:
        tty = stream.isatty()
        try:
            while True:
                await asyncio.sleep(0.25 if tty else 5.0)
                stream.write(f"\r{self.progress_line()}\x1b[K" if tty else f"{self.progress_line()}\n")
                stream.flush()
        finally:
            if tty:
                stream.write("\r\x1b[K")
                stream.flush()

    async def sample_metrics(self, url: str, interval: float, finished: asyncio.Event) -> None:
        """Scrape `url` every `interval` seconds until `finished`, then once more for the final state."""
        import httpx

        from gpuscale.promtext import parse_samples  # imported by generate() already: not timed here

        async with httpx.AsyncClient(timeout=min(5.0, max(1.0, 4 * interval))) as client:
            while True:
                at = self.elapsed()
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    values = parse_samples(response.text)
                except (httpx.HTTPError, ValueError):
                    self.scrape_errors += 1
                else:
                    # Histogram buckets would make every sample dozens of series nobody plots.
                    kept = {k: v for k, v in values.items() if not k.split("{")[0].endswith("_bucket")}
                    self.samples.append(MetricsSample(at, kept))
                if finished.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), max(0.0, at + interval - self.elapsed()))


async def generate(
    spec: LoadSpec,
    *,
    metrics_url: str | None = None,
    sample_interval: float = 0.5,
    progress: bool = False,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """Send the load `spec` describes and wait for every answer. `stop` ends the run early: nothing more
    is sent, and requests still in flight are cancelled and recorded with the error "cancelled"."""
    import httpx

    if not sample_interval > 0:
        raise ValueError(f"sample_interval must be positive, got {sample_interval}")
    if metrics_url:
        # Its first import takes tens of milliseconds, which would hold up the first requests.
        import gpuscale.promtext  # noqa: F401
    headers = dict(spec.headers)
    if spec.body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    # Sized so a request never waits for a connection: the wait would count as service latency.
    transport = _checkout_transport(spec.max_in_flight)
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(spec.timeout), headers=headers
    ) as client:
        state = _Run(spec)
        finished = asyncio.Event()
        helpers: list[asyncio.Task[None]] = []
        if metrics_url:
            helpers.append(asyncio.create_task(state.sample_metrics(metrics_url, sample_interval, finished)))
        progress_task = asyncio.create_task(state.show_progress(sys.stderr)) if progress else None
        driver = asyncio.create_task(state.open_loop(client) if spec.open_loop else state.closed_loop(client))
        waits: set[asyncio.Task[Any]] = {driver}
        if stop is not None:
            waits.add(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits - {driver}:
                task.cancel()
            if not driver.done():
                driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
            wall = state.elapsed()
            if progress_task is not None:
                progress_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress_task
            finished.set()
            await asyncio.gather(*helpers)
    state.records.sort(key=lambda r: r.start)
    return LoadResult(spec, state.records, state.samples, wall, metrics_url, state.scrape_errors)


def failed_to_connect(result: LoadResult) -> bool:
    """True when there were requests and none of them connected (nothing listens at the URL)."""
    return bool(result.records) and all(
        r.status == 0 and (r.error or "").startswith(_CONNECT_ERRORS) for r in result.records
    )


# --- the command line ---------------------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not value > 0 or (kind is float and math.isinf(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Send requests to URL and report latency percentiles, status codes and errors, like hey. "
        "Closed loop by default (-c workers, each sends its next request when the last is answered); "
        "-q R is open loop: R arrivals per second whatever the answers do, the way users arrive."
    )
    add = parser.add_argument
    add("url", metavar="URL", help="http:// or https:// URL to send to")
    add("-c", "--concurrency", type=_positive(int), default=10, metavar="N", help="closed-loop workers (10)")
    add("-q", "--rate", type=_positive(float), metavar="R", help="open loop: R arrivals per second in total")
    add("--poisson", action="store_true", help="open loop: exponential gaps (a Poisson process), not even")
    add(
        "--max-outstanding",
        type=_positive(int),
        default=10000,
        metavar="N",
        help="open loop: at most N unanswered requests; later arrivals wait (10000)",
    )
    add("-n", "--requests", type=_positive(int), metavar="N", help="send N requests (200 without -z)")
    add(
        "-z",
        "--duration",
        type=_positive(float),
        metavar="SECONDS",
        help="send for SECONDS (with -n: the first)",
    )
    add("-m", "--method", help="HTTP method (POST with a body, else GET)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("-d", "--body", metavar="JSON", help="JSON request body (sent as application/json)")
    body.add_argument("-D", "--body-file", metavar="PATH", help="file with the JSON request body")
    add("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="header (repeatable)")
    add("--timeout", type=_positive(float), default=900.0, metavar="SECONDS", help="per request (900)")
    add("--seed", type=int, help="random seed of the --poisson schedule")
    add("--metrics-url", metavar="URL", help="Prometheus /metrics to sample during the run (the gateway's)")
    add(
        "--sample-interval",
        type=_positive(float),
        default=0.5,
        metavar="SECONDS",
        help="--metrics-url period (0.5)",
    )
    add("--json", metavar="PATH", help="write the summary and every request record as JSON")
    add("--plot", metavar="PATH.png", help="plot replicas, queue and latencies over time (needs matplotlib)")
    add("--quiet", action="store_true", help="print only the summary line, no progress")


class _UsageError(Exception):
    pass


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _UsageError(f"{what} must be an http:// or https:// URL, got {url!r}")


def _check_output(path: str | None, flag: str) -> None:
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise _UsageError(f"{flag}: no such directory: {os.path.dirname(path)}")


def _read_body(args: argparse.Namespace) -> bytes | None:
    if args.body_file is not None:
        try:
            with open(args.body_file, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise _UsageError(f"--body-file: cannot read {args.body_file}: {exc.strerror}") from None
        what = f"--body-file {args.body_file}"
    elif args.body is not None:
        data, what = args.body.encode(), "--body"
    else:
        return None
    try:
        json.loads(data)
    except ValueError as exc:
        raise _UsageError(f"{what} is not JSON: {exc}") from None
    return data


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, rest = value.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise _UsageError(f"-H must be 'Name: value', got {value!r}")
        headers[name.strip()] = rest.strip()
    return headers


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    """The LoadSpec the flags describe; raises _UsageError with the reason."""
    _check_url(args.url, "URL")
    if args.metrics_url:
        _check_url(args.metrics_url, "--metrics-url")
    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise _UsageError("--plot needs matplotlib: pip install 'gpuscale[plot]'")
    body = _read_body(args)
    return LoadSpec(
        url=args.url,
        method=args.method or ("POST" if body is not None else "GET"),
        body=body,
        headers=_parse_headers(args.header),
        concurrency=args.concurrency,
        rate=args.rate,
        poisson=args.poisson,
        requests=args.requests,
        duration=args.duration,
        timeout=args.timeout,
        max_outstanding=args.max_outstanding,
        seed=args.seed,
    )


def _allow_open_files(needed: int) -> None:
    # Every outstanding request holds a socket; the usual soft limit of 1024 would fail them as errors.
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _run_cli(spec: LoadSpec, args: argparse.Namespace, prog: str) -> LoadResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        print(f"\n{prog}: stopping; Ctrl-C again to abort", file=sys.stderr)
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    # The first Ctrl-C ends the run with its report; without this it would throw the records away.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    return await generate(
        spec,
        metrics_url=args.metrics_url,
        sample_interval=args.sample_interval,
        progress=not args.quiet,
        stop=stop,
    )


def run(args: argparse.Namespace, prog: str = "gpuscale load") -> int:
    from inference_app.exit_codes import EXIT_USAGE

    try:
        spec = spec_from_args(args)
    except (_UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _allow_open_files(spec.max_in_flight + 64)
    try:
        result = asyncio.run(_run_cli(spec, args, prog))
    except KeyboardInterrupt:
        return 130
    print(result.summary_line() if args.quiet else result.report(), end="\n" if args.quiet else "")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_json(), f)
        if not args.quiet:
            print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from gpuscale.plot import plot_run

        mode = f"open loop {spec.rate:g}/s" if spec.open_loop else f"{spec.concurrency} workers"
        plot_run(result, args.plot, title=f"{spec.method} {spec.url} ({mode})")
        if not args.quiet:
            print(f"wrote {args.plot}", file=sys.stderr)
    if failed_to_connect(result):
        print(
            f"{prog}: error: no request connected to {spec.url}: {result.records[0].error}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gpuscale.loadgen`: the same command without the rest of the `gpuscale` CLI."""
    from inference_app.cli import OneLineErrorParser

    parser = OneLineErrorParser(prog="gpuscale load")
    add_arguments(parser)
    return run(parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
