"""Pod-server benchmarks: serialization, slots vs one slot, slot efficiency, overhead, responsiveness.

Drives real pod-server processes on loopback with Debian's `hey` and `wrk`, prints each table, writes
bench/results/pod_server.json and rewrites the tables in docs/why-one-slot.md. Run it with
`make bench` (which installs hey and wrk when missing) or `.venv/bin/python bench/pod_server.py`.

Servers run on CPU 0 and load tools on CPU 1 (`taskset`), so they do not compete for a core.
Figures are of this machine; compare ratios measured side by side in one run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gpuscale.markdown import fill_blocks, table
from gpuscale.podproc import PodProcess
from gpuscale.promtext import scrape

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "why-one-slot.md"
RESULTS = ROOT / "bench" / "results" / "pod_server.json"
SERVER_CPU = "0"
LOAD_CPU = "1"
# One core stands for one GPU: the model may not spread over more threads than that.
ONE_CORE = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SLEEP_INFER = "/v2/models/sleep/infer"


@dataclass(frozen=True)
class Hit:
    latency: float
    status: int
    offset: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def hey(
    url: str,
    *,
    concurrency: int,
    requests: int | None = None,
    seconds: float | None = None,
    qps: float | None = None,
    method: str = "POST",
    body: str | None = None,
    timeout: int = 20,
) -> tuple[list[Hit], float]:
    """Run hey on the load CPU; return every request's latency and status, and the wall time."""
    command = ["taskset", "-c", LOAD_CPU, "hey", "-c", str(concurrency), "-o", "csv", "-t", str(timeout)]
    if seconds is not None:
        command += ["-z", f"{seconds}s"]
    else:
        command += ["-n", str(requests)]
    if qps is not None:
        command += ["-q", str(qps)]
    command += ["-m", method]
    if body is not None:
        command += ["-T", "application/json", "-d", body]
    started = time.perf_counter()
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    rows = csv.DictReader(io.StringIO(out))
    hits = [Hit(float(r["response-time"]), int(r["status-code"]), float(r["offset"])) for r in rows]
    return hits, wall


def sleep_body(seconds: float) -> str:
    return json.dumps({"parameters": {"seconds": seconds}})


@contextmanager
def pod(*args: str, env: dict[str, str] | None = None, cpus: str | None = SERVER_CPU) -> Iterator[str]:
    process = PodProcess(["--log-level", "warning", *args], env=env, cpus=cpus)
    try:
        yield process.wait_ready(120)
    finally:
        process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def bare_server() -> Iterator[str]:
    """The bare Starlette baseline, under the same uvicorn options as the pod server."""
    port = free_port()
    command = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench")]
    command += ["bare_app:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    command += ["--log-level", "warning", "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url + SLEEP_INFER, content=sleep_body(0), timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait()


def post_json(url: str, body: str) -> Any:
    response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=600)
    response.raise_for_status()
    return response.json()


# --- 1. serialization ----------------------------------------------------------------------------


def serialization(job_seconds: float = 1.0, clients: int = 10) -> dict[str, Any]:
    log(f"serialization: {clients} concurrent requests of {job_seconds:g} s to one pod (one slot)")
    with pod("--max-queue", str(clients), "--sleep-seconds", str(job_seconds)) as url:
        hits, wall = hey(
            url + SLEEP_INFER, requests=clients, concurrency=clients, body=sleep_body(job_seconds)
        )
    latencies = sorted(h.latency for h in hits)
    statuses = sorted({h.status for h in hits})
    rows = [(k + 1, f"{lat:.2f} s", f"{k + 1:.0f} s") for k, lat in enumerate(latencies)]
    markdown = table(["answer", "latency", "ideal"], rows)
    markdown += (
        f"\n\nAll {len(hits)} answered (status {statuses}); the last came {latencies[-1]:.2f} s after the "
        f"burst (hey's wall time {wall:.2f} s). Mean latency {statistics.mean(latencies):.2f} s."
    )
    return {"latencies": latencies, "wall_seconds": wall, "statuses": statuses, "markdown": markdown}


# --- 2. why one slot -----------------------------------------------------------------------------


def _matmul_args(backend: str, size: int, iterations: int, slots: int) -> list[str]:
    return [
        "--model", "matmul", "--matmul-backend", backend, "--slots", str(slots), "--max-queue", "4",
        "--matmul-size", str(size), "--matmul-iterations", str(iterations),
        "--matmul-max-iterations", "100000",
    ]  # fmt: skip


def why_one_slot(
    backend: str, size: int, target_seconds: float, reps: int, cpus: str | None, device_note: str
) -> dict[str, Any]:
    log(f"why one slot: matmul on {backend} ({device_note}), size {size}, ~{target_seconds:g} s per job")
    env = ONE_CORE if cpus is not None else None

    def timed(url: str, iterations: int) -> float:
        body = json.dumps({"parameters": {"size": size, "iterations": iterations}})
        infer = url + "/v2/models/matmul/infer"
        return float(min(post_json(infer, body)["parameters"]["service_seconds"] for _ in range(3)))

    # Two points, so the fixed cost of a job (building the matrix) does not skew the per-iteration time.
    with pod(*_matmul_args(backend, size, 1, 1), env=env, cpus=cpus) as url:
        one, five = timed(url, 1), timed(url, 5)
    per_iteration = max((five - one) / 4, 1e-6)
    iterations = max(1, round((target_seconds - (one - per_iteration)) / per_iteration))
    job = json.dumps({"parameters": {"size": size, "iterations": iterations}})
    modes: dict[str, dict[str, Any]] = {}
    for slots, concurrency, name in ((1, 1, "sequential"), (1, 2, "one slot"), (2, 2, "two slots")):
        with pod(*_matmul_args(backend, size, iterations, slots), env=env, cpus=cpus) as url:
            runs = []
            for _ in range(reps):
                infer = url + "/v2/models/matmul/infer"
                hits, wall = hey(infer, requests=2, concurrency=concurrency, body=job, timeout=600)
                assert all(h.status == 200 for h in hits), hits
                runs.append((sorted(h.latency for h in hits), wall))
        modes[name] = {
            "first": statistics.median(r[0][0] for r in runs),
            "second": statistics.median(r[0][1] for r in runs),
            "both_done": statistics.median(max(r[0]) if name != "sequential" else r[1] for r in runs),
        }
    single = modes["sequential"]["first"]
    labels = {
        "sequential": "one client, one request after the other (baseline)",
        "one slot": "2 at once, `--slots 1` (one queued)",
        "two slots": "2 at once, `--slots 2` (sharing the device)",
    }
    rows = []
    for name, m in modes.items():
        mean = (m["first"] + m["second"]) / 2
        m["mean"] = mean
        rows.append(
            (
                labels[name],
                f"{m['first']:.2f} s ({m['first'] / single:.2f}x)",
                f"{m['second']:.2f} s ({m['second'] / single:.2f}x)",
                f"**{mean / single:.2f}x**",
                f"{m['both_done']:.2f} s",
            )
        )
    markdown = table(["two requests", "first answer", "second answer", "mean latency", "both done"], rows)
    markdown += (
        f"\n\nOne job: matmul {size}x{size}, {iterations} iterations, {single:.2f} s alone on {device_note}; "
        f"median of {reps} runs per row."
    )
    return {"backend": backend, "size": size, "iterations": iterations, "modes": modes, "markdown": markdown}


# --- 3. slot efficiency --------------------------------------------------------------------------


def slot_efficiency(job_seconds: float = 0.02, clients: int = 16, seconds: float = 10.0) -> dict[str, Any]:
    log(f"slot efficiency: {job_seconds * 1000:.0f} ms jobs, {clients} clients, {seconds:g} s")
    with pod("--sleep-seconds", str(job_seconds), "--max-queue", str(4 * clients)) as url:
        readings: list[tuple[float, float]] = []

        def sample_at(offsets: Sequence[float], t0: float) -> None:
            for offset in offsets:
                time.sleep(max(0.0, t0 + offset - time.perf_counter()))
                readings.append((time.perf_counter(), scrape(url)["gpuscale_slot_busy_seconds_total"]))

        t0 = time.perf_counter()
        sampler = threading.Thread(target=sample_at, args=((1.0, seconds - 1.0), t0))
        sampler.start()
        hits, wall = hey(url + SLEEP_INFER, seconds=seconds, concurrency=clients, body="{}")
        sampler.join()
        total_busy = scrape(url)["gpuscale_slot_busy_seconds_total"]
    (t1, b1), (t2, b2) = readings
    steady = (b2 - b1) / (t2 - t1)
    ok = [h for h in hits if h.status == 200]
    whole = total_busy / wall
    rate = len(ok) / wall
    markdown = table(
        ["measure", "value"],
        [
            ("busy / wall, steady state (from 1 s to 9 s)", f"**{steady * 100:.2f}%**"),
            ("busy / wall, whole run (ramp-up and the last request included)", f"{whole * 100:.2f}%"),
            ("answers per second (ideal 1 / job length)", f"{rate:.1f} (ideal {1 / job_seconds:.0f})"),
            ("answers that were not 200", str(len(hits) - len(ok))),
        ],
    )
    return {
        "steady": steady,
        "whole_run": whole,
        "rate": rate,
        "non_200": len(hits) - len(ok),
        "markdown": markdown,
    }


# --- 4. overhead ---------------------------------------------------------------------------------

_WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"parameters": {"seconds": 0}}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        out = subprocess.run(
            [*command, "-s", script.name, url], capture_output=True, text=True, check=True
        ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rate": rate, "non_2xx": float(bad.group(1)) if bad else 0.0}


def overhead(
    rounds: int = 3, seconds: int = 5, connections: int = 16, qps_seconds: float = 8.0
) -> dict[str, Any]:
    log(f"overhead: 0 s jobs, pod server vs bare Starlette, {rounds} rounds of wrk, then hey at 100 req/s")
    servers: dict[str, Callable[[], Any]] = {
        "bare uvicorn + Starlette": bare_server,
        "gpuscale pod server": lambda: pod("--sleep-seconds", "0", "--max-queue", "256"),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    non_2xx: dict[str, float] = dict.fromkeys(servers, 0.0)
    paced: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):  # interleaved, so drift on the machine hits both alike
        for name, start in servers.items():
            with start() as url:
                result = wrk(url + SLEEP_INFER, seconds, connections)
                rates[name].append(result["rate"])
                non_2xx[name] += result["non_2xx"]
    for _ in range(2):
        for name, start in servers.items():
            with start() as url:
                hits, _ = hey(
                    url + SLEEP_INFER, seconds=qps_seconds, concurrency=10, qps=10, body=sleep_body(0)
                )
                assert all(h.status == 200 for h in hits)
                paced[name] += [h.latency for h in hits]
    bare, ours = servers
    summary: dict[str, dict[str, Any]] = {
        name: {
            "rate": statistics.median(rates[name]),
            "rates": rates[name],
            "non_2xx": non_2xx[name],
            "p50": pct(paced[name], 50),
            "p99": pct(paced[name], 99),
            "paced_requests": len(paced[name]),
        }
        for name in servers
    }
    ratio = summary[ours]["rate"] / summary[bare]["rate"]
    added_p99 = summary[ours]["p99"] - summary[bare]["p99"]
    rows = [
        (
            name,
            f"{s['rate']:.0f}",
            ms(s["p50"]),
            ms(s["p99"]),
        )
        for name, s in summary.items()
    ]
    markdown = table(
        [
            "server (one uvicorn worker, CPU 0)",
            "requests/s, saturated",
            "p50 at 100 req/s",
            "p99 at 100 req/s",
        ],
        rows,
    )
    markdown += (
        f"\n\nThroughput of the pod server: **{ratio * 100:.0f}%** of the bare endpoint (goal >= 50%); "
        f"p99 added at 100 req/s: **{added_p99 * 1000:.2f} ms** (goal <= 5 ms). "
        f"Saturated: wrk, 1 thread, {connections} connections, {seconds} s, median of {rounds} interleaved "
        f"rounds ({', '.join(f'{r:.0f}' for r in rates[ours])} vs "
        f"{', '.join(f'{r:.0f}' for r in rates[bare])} req/s). "
        f"Paced: hey, 10 clients x 10 req/s, 2 x {qps_seconds:g} s each. Non-2xx answers: "
        f"{int(non_2xx[ours])} vs {int(non_2xx[bare])}."
    )
    return {"servers": summary, "throughput_ratio": ratio, "added_p99": added_p99, "markdown": markdown}


# --- 5. responsiveness ---------------------------------------------------------------------------


def responsiveness(job_seconds: float = 5.0, max_queue: int = 8, requests: int = 500) -> dict[str, Any]:
    log(f"responsiveness: /metrics and health while a {job_seconds:g} s job runs and {max_queue} wait")
    results: dict[str, Any] = {}
    with pod("--sleep-seconds", str(job_seconds), "--max-queue", str(max_queue)) as url:
        fill = [
            "taskset",
            "-c",
            LOAD_CPU,
            "hey",
            "-n",
            str(max_queue + 1),
            "-c",
            str(max_queue + 1),
            "-t",
            "0",
        ]
        fill += ["-m", "POST", "-T", "application/json", "-d", "{}", url + SLEEP_INFER]
        background = subprocess.Popen(fill, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while scrape(url)["gpuscale_queue_depth"] < max_queue:
                assert time.monotonic() < deadline, "the queue did not fill"
                time.sleep(0.02)
            for path in ("/metrics", "/v2/health/ready"):
                hits, _ = hey(url + path, requests=requests, concurrency=4, method="GET")
                assert all(h.status == 200 for h in hits), {h.status for h in hits}
                latencies = [h.latency for h in hits]
                results[path] = {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies)}
            during = scrape(url)
            results["still_busy"] = {
                "queued": during["gpuscale_queue_depth"],
                "running": during["gpuscale_inflight_requests"],
            }
        finally:
            background.kill()
    rows = [
        (f"`{p}`", ms(r["p50"]), f"**{ms(r['p99'])}**", ms(r["max"]))
        for p, r in results.items()
        if p != "still_busy"
    ]
    markdown = table(["endpoint", "p50", "p99", "max"], rows)
    busy = results["still_busy"]
    markdown += (
        f"\n\n{requests} requests each, 4 at a time, while one {job_seconds:g} s job held the slot and "
        f"{max_queue} waited (after the runs: {int(busy['running'])} running, {int(busy['queued'])} queued). "
        "Goal: p99 <= 20 ms."
    )
    results["markdown"] = markdown
    return results


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
    }


def update_doc(sections: dict[str, str], doc: Path = DOC) -> None:
    try:
        doc.write_text(fill_blocks(doc.read_text(), sections))
    except ValueError as exc:
        raise SystemExit(f"{doc}: {exc}") from None


def missing_tool() -> str | None:
    """The first load tool the benchmarks need that is not installed."""
    return next((tool for tool in ("hey", "wrk", "taskset") if shutil.which(tool) is None), None)


def run_sections(
    runs: dict[str, Callable[[], dict[str, Any]]], results_path: Path, doc: Path, print_only: bool
) -> None:
    """Run each section and print its table; unless `print_only`, record the figures (beside those of
    sections not run this time) and fill the doc's `<!-- bench:NAME -->` blocks."""
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = m = machine()
    sections = {}
    for key, run in runs.items():
        result = run()
        results[key] = result
        sections[key] = result["markdown"]
        print(f"\n## {key}\n\n{result['markdown']}\n", flush=True)
    sections["machine"] = (
        f"Measured on {m['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}."
    )
    if not print_only:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        update_doc(sections, doc)
        log(f"wrote {results_path.relative_to(ROOT)} and the tables in {doc.relative_to(ROOT)}")


def sections_cli(
    argv: Sequence[str] | None,
    description: str | None,
    sections: dict[str, Callable[[], dict[str, Any]]],
    results_path: Path,
    doc: Path,
    tools: bool = True,
) -> int:
    """The `--only`/`--print-only` command line of a benchmark made of named sections."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sections, action="append", help="run only these sections")
    parser.add_argument("--print-only", action="store_true", help="write neither the results nor the doc")
    args = parser.parse_args(argv)
    if tools and (tool := missing_tool()):
        print(f"bench: {tool} not found; run `make tools`", file=sys.stderr)
        return 2
    chosen = {name: run for name, run in sections.items() if not args.only or name in args.only}
    run_sections(chosen, results_path, doc, args.print_only)
    return 0


SECTIONS = ("serialization", "why-one-slot", "slot-efficiency", "overhead", "responsiveness")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "torch"), help="matmul backend")
    parser.add_argument("--size", type=int, default=1024, help="matmul size for 'why one slot'")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the matmul server to one core (GPU)"
    )
    parser.add_argument(
        "--print-only", action="store_true", help="write neither the results file nor docs/why-one-slot.md"
    )
    args = parser.parse_args(argv)
    if tool := missing_tool():
        print(f"bench: {tool} not found; run `make tools` (Debian: apt-get install hey wrk)", file=sys.stderr)
        return 2
    only = set(args.only or SECTIONS)
    cpus = None if args.no_pin else SERVER_CPU
    note = "one CPU core" if cpus is not None else "the GPU" if args.backend == "torch" else "all cores"
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "serialization": serialization,
        "why-one-slot": lambda: why_one_slot(args.backend, args.size, 1.0, 3, cpus, note),
        "slot-efficiency": slot_efficiency,
        "overhead": overhead,
        "responsiveness": responsiveness,
    }
    # A torch run of "why one slot" is kept beside the numpy one, not over it.
    torch_key = {"why-one-slot": f"why-one-slot-{args.backend}"} if args.backend != "numpy" else {}
    chosen = {torch_key.get(name, name): runs[name] for name in SECTIONS if name in only}
    run_sections(chosen, RESULTS, DOC, args.print_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
