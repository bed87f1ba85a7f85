"""The local backend: replicas are pod-server processes on 127.0.0.x, one GPU each where GPUs exist.

A replica starts, waits until /v2/health/ready answers, and only then is registered with the gateway.
A replica that exits on its own is taken out of the gateway and forgotten, so the loop replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpuscale.control.gateway_admin import GatewayAdmin, GatewayUnavailable
from gpuscale.control.loop import Phase, ReplicaStatus
from gpuscale.podproc import PodProcess, PodStartError
from gpuscale.spec import GpuInferenceService

# After a replica fails to start, wait this long (doubling, up to the cap) before the next start, so a
# broken model does not become a tight restart loop.
START_BACKOFF_SECONDS = 1.0
START_BACKOFF_MAX_SECONDS = 30.0
# After SIGTERM, a replica and the gateway may take this long past the longest request to drain.
DRAIN_SLACK_SECONDS = 30.0


def drain_seconds(service: GpuInferenceService) -> float:
    """The `--drain-seconds` of the local replicas and gateway: room to finish the longest request."""
    return service.spec.max_request_seconds + DRAIN_SLACK_SECONDS


def detect_gpus() -> list[str]:
    """GPU indices this process may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def loopback_hosts() -> list[str]:
    """127.0.0.2 … 127.0.0.254, one per replica, where the system answers on all of 127/8 (Linux);
    else only 127.0.0.1 (replicas then differ by port alone)."""
    try:
        with socket.create_server(("127.0.0.2", 0)):
            return [f"127.0.0.{i}" for i in range(2, 255)]
    except OSError:
        return ["127.0.0.1"]


@dataclass
class LocalReplica:
    name: str
    host: str
    gpus: tuple[str, ...]
    process: PodProcess
    phase: Phase = "starting"
    task: asyncio.Task[None] | None = None


class LocalBackend:
    def __init__(
        self,
        service: GpuInferenceService,
        gateway: GatewayAdmin,
        *,
        gpus: Sequence[str] = (),
        start_timeout: float = 600.0,
        echo: bool = False,
        note: Callable[[str], None] = print,
    ) -> None:
        self.service = service
        self.gateway = gateway
        self.gpus = list(gpus)
        self.start_timeout = start_timeout
        self.echo = echo
        self.note = note
        self._replicas: dict[str, LocalReplica] = {}
        self._numbers = itertools.count(1)
        self._hosts = loopback_hosts()
        self._failures = 0
        self._retry_at = 0.0
        self.exits: list[tuple[str, int]] = []  # replicas that exited on their own, with their code

    # What the loop sees.

    def replicas(self) -> list[ReplicaStatus]:
        self._reap()
        return [ReplicaStatus(r.name, r.phase) for r in self._replicas.values() if r.phase != "stopping"]

    def _reap(self) -> None:
        for replica in list(self._replicas.values()):
            code = replica.process.proc.poll()
            if code is None:
                continue
            del self._replicas[replica.name]
            if replica.phase == "ready":
                self.exits.append((replica.name, code))
                self.note(f"replica {replica.name} exited with code {code}; it will be replaced")
                asyncio.get_running_loop().create_task(self._forget(replica.name))

    async def _forget(self, name: str) -> None:
        with contextlib.suppress(GatewayUnavailable):
            await self.gateway.remove(name)

    # Starting.

    def _free_gpus(self) -> list[str]:
        taken = {g for r in self._replicas.values() for g in r.gpus}
        return [g for g in self.gpus if g not in taken]

    def _free_host(self) -> str:
        taken = {r.host for r in self._replicas.values()}
        return next((h for h in self._hosts if h not in taken), self._hosts[0])

    def _pod_arguments(self) -> list[str]:
        spec = self.service.spec
        arguments = ["--slots", str(spec.slots_per_replica)]
        arguments += [
            "--max-request-seconds",
            f"{spec.max_request_seconds:g}",
            "--drain-seconds",
            f"{drain_seconds(self.service):g}",
        ]
        if not self.echo:
            arguments += ["--log-level", "warning"]
        return arguments

    async def start(self, count: int) -> list[str]:
        if time.monotonic() < self._retry_at:
            return []
        spec = self.service.spec
        started = []
        for _ in range(count):
            env = {var.name: var.value for var in spec.template.env}
            gpus: tuple[str, ...] = ()
            if spec.gpus_per_replica == 0:
                env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU-only replica must not grab a GPU
            elif self.gpus:
                free = self._free_gpus()
                if len(free) < spec.gpus_per_replica:
                    break  # every GPU is taken; maxReplicas was capped to this already
                gpus = tuple(free[: spec.gpus_per_replica])
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            name = f"{self.service.name}-{next(self._numbers)}"
            host = self._free_host()
            process = PodProcess(self._pod_arguments(), host=host, env=env, echo=self.echo)
            replica = LocalReplica(name, host, gpus, process)
            self._replicas[name] = replica
            replica.task = asyncio.get_running_loop().create_task(self._bring_up(replica))
            started.append(name)
        return started

    async def _bring_up(self, replica: LocalReplica) -> None:
        try:
            url = await asyncio.to_thread(replica.process.wait_ready, self.start_timeout)
            await self.gateway.register(replica.name, url, self.service.spec.slots_per_replica)
        except (PodStartError, GatewayUnavailable) as exc:
            self._start_failed(replica, str(exc))
            return
        if replica.phase == "starting":
            replica.phase = "ready"
            self._failures = 0

    def _start_failed(self, replica: LocalReplica, why: str) -> None:
        replica.process.kill()
        self._replicas.pop(replica.name, None)
        self._failures += 1
        backoff = min(START_BACKOFF_MAX_SECONDS, START_BACKOFF_SECONDS * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + backoff
        self.note(f"replica {replica.name} failed to start ({why.strip()}); next try in {backoff:g} s")

    # Stopping.

    async def stop(self, names: Sequence[str]) -> None:
        for name in names:
            replica = self._replicas.get(name)
            if replica is None:
                continue
            replica.phase = "stopping"
            if replica.task is not None:
                replica.task.cancel()
            with contextlib.suppress(GatewayUnavailable):
                await self.gateway.remove(name)
            replica.process.terminate()  # SIGTERM: it drains (it is idle) and exits
            asyncio.get_running_loop().create_task(self._wait_gone(replica))

    async def _wait_gone(self, replica: LocalReplica) -> None:
        await asyncio.to_thread(replica.process.stop, self.service.spec.max_request_seconds + 60)
        self._replicas.pop(replica.name, None)

    async def close(self, grace: float = 60.0) -> None:
        """Drain every replica and wait for all of them to exit (killed after `grace` seconds)."""
        replicas = list(self._replicas.values())
        for replica in replicas:
            if replica.task is not None:
                replica.task.cancel()
            replica.process.terminate()
        await asyncio.gather(*(asyncio.to_thread(r.process.stop, grace) for r in replicas))
        self._replicas.clear()
