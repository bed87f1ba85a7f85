"""The load generator against a real one-slot pod server: counts, 429s, metrics, the CLI end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
from gpuscale.loadgen import LoadSpec, generate
from gpuscale.podproc import PodProcess
from gpuscale.promtext import parse_samples, scrape

from tests.app.conftest import GPUSCALE, StartPod
from tests.conftest import wait_until

BODY = b'{"parameters": {"seconds": 0.05}}'
LOAD = [GPUSCALE, "load"]


def small_pod(start_pod: StartPod) -> PodProcess:
    return start_pod("--model", "sleep", "--sleep-seconds", "0.05", "--max-queue", "2")


def infer_url(pod: PodProcess) -> str:
    return f"{pod.url}/v2/models/sleep/infer"


async def test_closed_loop_counts_every_request_and_sees_429s_past_slots_and_queue(
    start_pod: StartPod,
) -> None:
    pod = small_pod(start_pod)
    # 6 workers against 1 slot + 2 queue places: whenever all 6 are out, 3 find the pod full.
    spec = LoadSpec(infer_url(pod), "POST", BODY, concurrency=6, requests=40)
    result = await generate(spec, metrics_url=f"{pod.url}/metrics", sample_interval=0.05)
    s = result.summary()
    assert s["sent"] == len(result.records) == 40
    assert s["ok_2xx"] + s["rejected"] == 40
    assert s["ok_2xx"] > 0
    assert s["rejected"] > 0
    assert {r.status for r in result.records} == {200, 429}
    assert s["failed"] == s["transport_errors"] == 0
    assert all(r.latency >= 0.05 for r in result.ok())  # each 2xx held the slot for its 0.05 s job
    assert [r.start for r in result.records] == sorted(r.start for r in result.records)
    # the pod's own /metrics, sampled during the run
    assert result.samples
    assert all("gpuscale_queue_depth" in sample.values for sample in result.samples)
    assert all(sample.values["gpuscale_slots"] == 1 for sample in result.samples)
    assert max(sample.values["gpuscale_queue_depth"] for sample in result.samples) <= 2
    assert not any(key.endswith("_bucket") or "_bucket{" in key for key in result.samples[0].values)
    # the pod counted what the load generator counted
    async with httpx.AsyncClient() as client:
        served = parse_samples((await client.get(f"{pod.url}/metrics")).text)
    assert served['gpuscale_requests_total{outcome="ok"}'] == s["ok_2xx"]
    assert served['gpuscale_requests_total{outcome="rejected_full"}'] == s["rejected"]


async def test_open_loop_sends_on_schedule_not_on_answers(start_pod: StartPod) -> None:
    pod = small_pod(start_pod)
    spec = LoadSpec(infer_url(pod), "POST", BODY, rate=40.0, requests=16)
    result = await generate(spec)
    assert len(result.records) == 16
    starts = [r.start for r in result.records]
    # never before its arrival time i/40 (a little slack: the loop's clock is not perf_counter)
    assert all(start >= i / 40 - 0.005 for i, start in enumerate(starts))
    assert result.summary()["ok_2xx"] + result.summary()["rejected"] == 16


async def test_stop_ends_the_run_early_and_keeps_the_records(start_pod: StartPod) -> None:
    pod = small_pod(start_pod)
    stop = asyncio.Event()
    spec = LoadSpec(infer_url(pod), "POST", BODY, concurrency=2, duration=600.0)
    run = asyncio.create_task(generate(spec, stop=stop))
    await asyncio.sleep(0.5)
    stop.set()
    result = await run
    assert result.wall_seconds < spec.duration  # type: ignore[operator]
    assert result.summary()["ok_2xx"] > 0
    assert all(r.status in (200, 429) or r.error == "cancelled" for r in result.records)


def test_the_command_end_to_end_writes_json_and_plot(start_pod: StartPod, tmp_path: Path) -> None:
    pod = small_pod(start_pod)
    out_json, out_png = tmp_path / "run.json", tmp_path / "run.png"
    args = ["-c", "2", "-n", "20", "-d", BODY.decode(), "--metrics-url", f"{pod.url}/metrics"]
    args += ["--sample-interval", "0.05", "--json", str(out_json), "--plot", str(out_png), infer_url(pod)]
    result = subprocess.run([*LOAD, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for section in ("Summary:", "Requests/sec:", "Response time histogram", "Latency distribution", "99% in"):
        assert section in result.stdout
    assert "Status code distribution:\n  [200]\t20 responses" in result.stdout
    assert "Sent 20   answered 2xx 20   rejected (429, 503) 0   failed 0" in result.stdout
    data = json.loads(out_json.read_text())
    assert data["summary"]["sent"] == data["summary"]["ok_2xx"] == len(data["records"]) == 20
    assert data["spec"]["method"] == "POST"
    assert data["samples"]
    assert "gpuscale_queue_depth" in data["samples"][0]["values"]
    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_nothing_listening_exits_1_with_the_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = subprocess.run(
        [*LOAD, "-n", "5", "-c", "2", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Sent 5   answered 2xx 0   rejected (429, 503) 0   failed 5" in result.stdout
    assert "Error distribution:\n  [5]\tConnectError" in result.stdout
    assert result.stderr.splitlines()[-1].startswith(
        f"gpuscale load: error: no request connected to http://127.0.0.1:{port}/"
    )


def test_ctrl_c_stops_the_run_and_prints_the_summary(start_pod: StartPod) -> None:
    pod = small_pod(start_pod)
    proc = subprocess.Popen(
        [*LOAD, "--quiet", "-c", "1", "-z", "600", "-d", BODY.decode(), infer_url(pod)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Requests reaching the pod mean the run (and its Ctrl-C handler) has started.
        wait_until(lambda: scrape(pod.url)['gpuscale_requests_total{outcome="ok"}'] >= 2, 30, interval=0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stderr == "\ngpuscale load: stopping; Ctrl-C again to abort\n"
    # --quiet: the summary line alone (a request in flight at the Ctrl-C counts as failed: "cancelled")
    assert len(stdout.splitlines()) == 1
    assert stdout.startswith("Sent ")
    assert "rejected (429, 503) 0" in stdout
