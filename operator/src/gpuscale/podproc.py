"""Server processes on this machine (pod servers, gateways): start one on a free port, read the address
it reports, wait until it is ready, drain it, stop it.

Used by the local backend, the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

import httpx

_LISTENING = re.compile(r"listening on (http://[^\s,()]+)")
_ADMIN = re.compile(r"admin (http://[^\s,()]+)")


class PodStartError(RuntimeError):
    pass


class ServerProcess:
    """A server started with `--port 0` that prints `listening on http://HOST:PORT` once it serves."""

    kind = "server"
    ready_path = "/v2/health/ready"

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cpus: str | None = None,
        echo: bool = False,
    ) -> None:
        command = list(command)
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        self.command = command
        self._echo = echo
        self._lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._url: str | None = None
        self.admin_url: str | None = None
        self._url_found = threading.Event()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            text=True,
        )
        # The server logs to a pipe: read it continuously, or a chatty server would block on a full pipe.
        self._reader = threading.Thread(target=self._read_output, name="pod-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self._lines.append(line)
            if self._echo:
                print(f"  [{self.kind}] {line}", file=sys.stderr)
            if self._url is None and (match := _LISTENING.search(line)):
                if admin := _ADMIN.search(line):
                    self.admin_url = admin.group(1)
                self._url = match.group(1)
                self._url_found.set()
        self._url_found.set()  # the process ended: wake anyone waiting for the address

    @property
    def output(self) -> list[str]:
        return list(self._lines)

    @property
    def url(self) -> str:
        if self._url is None:
            raise PodStartError(f"the {self.kind} has not reported its address yet")
        return self._url

    def wait_listening(self, timeout: float = 30.0) -> str:
        if not self._url_found.wait(timeout) or self._url is None:
            self.kill()
            raise PodStartError(self._failure("did not start listening", timeout))
        return self._url

    @property
    def ready_url(self) -> str:
        return self.url + self.ready_path

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait until the ready path answers 200; raise with the server's output if it never does."""
        deadline = time.monotonic() + timeout
        url = self.wait_listening(timeout)
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise PodStartError(self._failure(f"exited with code {self.proc.returncode}", timeout))
                try:
                    if client.get(self.ready_url).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        self.kill()
        raise PodStartError(self._failure("never became ready", timeout))

    def _failure(self, what: str, timeout: float) -> str:
        tail = "\n".join(self.output[-20:])
        return f"{self.kind} {what} (within {timeout:g} s): {' '.join(self.command)}\n{tail}"

    def terminate(self) -> None:
        """SIGTERM: the server drains (answers what it admitted) and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """Drain and wait; kill if the drain takes longer than `timeout`."""
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(timeout=10.0)


class PodProcess(ServerProcess):
    """One `python -m inference_app` process, started with `--port 0` so the OS picks a free port."""

    kind = "pod"

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        cpus: str | None = None,
        echo: bool = False,
    ) -> None:
        command = [sys.executable, "-m", "inference_app", "--host", host, "--port", "0", *args]
        super().__init__(command, env=env, cpus=cpus, echo=echo)


class GatewayProcess(ServerProcess):
    """One `python -m gpuscale_gateway` process; its admin port (and by default its port) picked by the OS."""

    kind = "gateway"
    ready_path = "/readyz"

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        cpus: str | None = None,
        echo: bool = False,
    ) -> None:
        command = [sys.executable, "-m", "gpuscale_gateway", "--host", host, "--port", str(port)]
        command += ["--admin-host", host, "--admin-port", "0", *args]
        super().__init__(command, env=env, cpus=cpus, echo=echo)

    @property
    def ready_url(self) -> str:
        if self.admin_url is None:
            raise PodStartError("the gateway did not report its admin address")
        return self.admin_url + self.ready_path
