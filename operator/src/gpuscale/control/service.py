"""One GpuInferenceService on this machine: the gateway process, the replicas, and the control loop
between them; and the drain that answers every accepted request before it all stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import httpx

from gpuscale.control.gateway_admin import GatewayAdmin
from gpuscale.control.local import LocalBackend, detect_gpus, drain_seconds
from gpuscale.control.loop import ControlLoop, TickReport
from gpuscale.podproc import GatewayProcess
from gpuscale.spec import AutoscalingSpec, GpuInferenceService, replicas_for


def local_autoscaling(service: GpuInferenceService, gpus: int) -> tuple[AutoscalingSpec, str | None]:
    """The autoscaling spec with maxReplicas capped by the GPUs here, and a note saying so."""
    spec = service.spec
    autoscaling = spec.autoscaling
    cap = replicas_for(gpus, spec.gpus_per_replica)
    if spec.gpus_per_replica and not gpus:
        return autoscaling, "no GPU found: replicas run on the CPU"
    if cap is None or cap >= autoscaling.max_replicas:
        return autoscaling, None
    if cap == 0:
        raise ValueError(f"each replica needs {spec.gpus_per_replica} GPUs and this machine has {gpus}")
    capped = autoscaling.model_copy(
        update={"max_replicas": cap, "min_replicas": min(autoscaling.min_replicas, cap)}
    )
    note = (
        f"maxReplicas {autoscaling.max_replicas} capped to {cap}: {gpus} GPU(s) here, "
        f"{spec.gpus_per_replica} per replica"
    )
    return capped, note


class LocalService:
    def __init__(
        self,
        service: GpuInferenceService,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        echo: bool = False,
        start_timeout: float = 600.0,
        on_tick: Callable[[TickReport], None] | None = None,
        note: Callable[[str], None] = print,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.echo = echo
        self.start_timeout = start_timeout
        self.on_tick = on_tick
        self.note = note
        self.gateway_process: GatewayProcess | None = None
        self.client: httpx.AsyncClient | None = None
        self.backend: LocalBackend | None = None
        self.loop: ControlLoop | None = None
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self.gateway_process is not None
        return self.gateway_process.url

    @property
    def admin_url(self) -> str:
        assert self.gateway_process is not None
        assert self.gateway_process.admin_url is not None
        return self.gateway_process.admin_url

    async def start(self) -> None:
        spec = self.service.spec
        gpus = detect_gpus()
        autoscaling, note = local_autoscaling(self.service, len(gpus))
        if note:
            self.note(note)
        gateway = spec.gateway
        arguments = ["--max-queue", str(gateway.max_queue), "--prefetch", str(gateway.prefetch)]
        arguments += ["--queue-timeout-seconds", f"{gateway.queue_timeout_seconds:g}"]
        arguments += [
            "--slots",
            str(spec.slots_per_replica),
            "--drain-seconds",
            f"{drain_seconds(self.service):g}",
        ]
        if not self.echo:
            arguments += ["--log-level", "warning"]
        process = GatewayProcess(arguments, host=self.host, port=self.port, echo=self.echo)
        self.gateway_process = process
        await asyncio.to_thread(process.wait_ready, 30.0)
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))
        admin = GatewayAdmin(self.admin_url, self.client)
        self.backend = LocalBackend(
            self.service,
            admin,
            gpus=gpus,
            start_timeout=self.start_timeout,
            echo=self.echo,
            note=self.note,
        )
        fixed = None if spec.autoscaling.enabled else spec.replicas
        self.loop = ControlLoop(autoscaling, self.backend, admin, fixed=fixed, on_tick=self.on_tick)
        self._loop_task = asyncio.get_running_loop().create_task(self.loop.run(self._stop))

    async def drain(self) -> int:
        """Stop taking requests, answer every one accepted, then stop the replicas and the gateway.

        The loop keeps running (scale-up only) while the gateway drains, so requests still queued,
        even with no replica left, get one. Returns the gateway's exit code.
        """
        gateway = self.gateway_process
        if gateway is None or self.loop is None or self.backend is None:
            return 0
        self.loop.scale_down = False
        gateway.terminate()
        code = await asyncio.to_thread(gateway.wait)
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        await self.backend.close()
        return code

    async def close(self) -> None:
        """Stop at once (after a drain, this only tidies up)."""
        self._stop.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.backend is not None:
            await self.backend.close(grace=5.0)
        if self.gateway_process is not None:
            self.gateway_process.kill()
        if self.client is not None:
            await self.client.aclose()

    async def __aenter__(self) -> LocalService:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
