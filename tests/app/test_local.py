"""`gpuscale local` end to end: a real gateway, real pod-server processes, the real control loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpuscale.control.loop import TickReport
from gpuscale.control.service import LocalService
from gpuscale.spec import GpuInferenceService, parse_service

from tests.app.conftest import GPUSCALE, INFER


def service(sleep: float = 0.5, **autoscaling: Any) -> GpuInferenceService:
    gateway = autoscaling.pop("gateway", {})
    return parse_service(
        {
            "apiVersion": "gpuscale.io/v1alpha1",
            "kind": "GpuInferenceService",
            "metadata": {"name": "t"},
            "spec": {
                "image": "unused-locally",
                "gpusPerReplica": 0,
                "maxRequestSeconds": 30,
                "template": {"env": [{"name": "GPUSCALE_SLEEP_SECONDS", "value": str(sleep)}]},
                "autoscaling": {"tickSeconds": 0.25, **autoscaling},
                "gateway": gateway,
            },
        }
    )


class Run:
    def __init__(self, local: LocalService, reports: list[TickReport]) -> None:
        self.local = local
        self.reports = reports

    @property
    def ready(self) -> int:
        return self.reports[-1].observation.ready if self.reports else 0

    async def until(self, check: Callable[[], bool], within: float = 30.0) -> None:
        # Polls: the state lives in tick reports, which no event announces.
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)


@pytest.fixture
async def run_local() -> AsyncIterator[Callable[[GpuInferenceService], Any]]:
    started: list[LocalService] = []

    async def start(spec: GpuInferenceService) -> Run:
        reports: list[TickReport] = []
        local = LocalService(spec, port=0, on_tick=reports.append, note=lambda _: None)
        started.append(local)
        await local.start()
        run = Run(local, reports)
        minimum = spec.spec.autoscaling.min_replicas
        await run.until(lambda: run.ready >= minimum and bool(reports))
        return run

    yield start
    for local in started:
        await local.close()


async def send(client: httpx.AsyncClient, url: str, seconds: float | None = None) -> httpx.Response:
    body = {"parameters": {"seconds": seconds}} if seconds is not None else {}
    return await client.post(url + INFER, json=body, timeout=60)


async def test_a_burst_scales_up_and_every_request_is_answered(run_local: Any) -> None:
    run: Run = await run_local(service(sleep=1.0, maxReplicas=4))
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*(send(client, run.local.url) for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    ups = [r for r in run.reports if r.decision.kind == "up"]
    assert ups, "no scale-up decision"
    assert max(r.decision.desired for r in ups) == 4
    assert len({a.headers["gpuscale-replica"] for a in answers}) >= 2


async def test_idle_replicas_go_while_load_continues_and_nothing_fails(run_local: Any) -> None:
    spec = service(
        sleep=0.3, maxReplicas=3, stableWindowSeconds=2, burstWindowSeconds=1, scaleDownDelaySeconds=1
    )
    run: Run = await run_local(spec)
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient() as client:

        async def client_loop(stop_at: float) -> None:
            while asyncio.get_running_loop().time() < stop_at:
                statuses[(await send(client, run.local.url)).status_code] += 1

        now = asyncio.get_running_loop().time()
        await asyncio.gather(*(client_loop(now + 3) for _ in range(3)))  # 3 busy replicas
        assert max(r.observation.replicas for r in run.reports) == 3
        # One client keeps going: the idle two are stopped under it.
        low = asyncio.create_task(client_loop(now + 30))
        await run.until(lambda: run.ready == 1 and sum(len(r.stopped) for r in run.reports) >= 2)
        low.cancel()
        stopped = [name for r in run.reports for name in r.stopped]
    assert statuses[200] > 0
    assert set(statuses) == {200}, statuses
    assert len(stopped) == 2


async def test_a_replica_killed_mid_request_is_routed_around_and_replaced(run_local: Any) -> None:
    run: Run = await run_local(service(sleep=2.0, minReplicas=2, maxReplicas=2))
    await run.until(lambda: run.ready == 2)
    backend = run.local.backend
    assert backend is not None
    async with httpx.AsyncClient() as client:
        first = asyncio.create_task(send(client, run.local.url))
        await asyncio.sleep(0.5)
        assert run.local.loop is not None
        busy = [r.name for r in (await run.local.loop.gateway.view()).replicas if r.outstanding]
        assert len(busy) == 1
        victim = backend._replicas[busy[0]]
        victim.process.proc.send_signal(signal.SIGKILL)
        killed = await first
        assert killed.status_code == 502
        assert "may have run" in killed.json()["error"]
        after = await asyncio.gather(*(send(client, run.local.url, 0.1) for _ in range(3)))
        assert [a.status_code for a in after] == [200] * 3
        assert {a.headers["gpuscale-replica"] for a in after} != {victim.name}
        await run.until(lambda: run.ready == 2 and victim.name not in backend._replicas)
    assert [name for name, _ in backend.exits] == [victim.name]


async def test_a_full_gateway_queue_answers_429(run_local: Any) -> None:
    run: Run = await run_local(service(sleep=1.0, maxReplicas=1, gateway={"maxQueue": 2}))
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*(send(client, run.local.url) for _ in range(5)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1


async def test_from_zero_the_gateway_buffers_until_a_replica_is_ready(run_local: Any) -> None:
    run: Run = await run_local(service(sleep=0.2, minReplicas=0, maxReplicas=2, scaleToZeroAfterSeconds=0))
    assert run.ready == 0
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*(send(client, run.local.url) for _ in range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    assert any(r.decision.kind == "up" and r.observation.replicas == 0 for r in run.reports)


def test_cli_invalid_manifest_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: gpuscale.io/v1alpha1\nkind: GpuInferenceService\nmetadata: {name: x}\n"
        "spec: {port: 0, autoscaling: {maxReplicas: 0}}\n"
    )
    result = subprocess.run([GPUSCALE, "local", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.removeprefix(f"gpuscale local: error: {path}: ") for line in lines] == [
        "spec.image: Field required",
        "spec.port: Input should be greater than or equal to 1",
        "spec.autoscaling.maxReplicas: Input should be greater than or equal to 1",
    ]


def test_cli_runs_until_ctrl_c_and_drains_what_it_accepted(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sleep.yaml"
    process = subprocess.Popen(
        [GPUSCALE, "local", str(example), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines = []
    url = None
    for line in process.stdout:
        lines.append(line)
        if "gateway on http://" in line:
            url = line.split("gateway on ")[1].split()[0]
            break
    assert url, "".join(lines)

    async def requests_then_interrupt() -> list[int]:
        async with httpx.AsyncClient() as client:
            sent = [asyncio.create_task(send(client, url, 1.0)) for _ in range(3)]
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGINT)
            return [(await s).status_code for s in sent]

    codes = asyncio.run(requests_then_interrupt())
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert codes == [200, 200, 200]
    assert process.returncode == 0, output
    assert "draining" in output
    assert "drained (gateway exit code 0)" in output
