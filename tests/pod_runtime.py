"""Local processes playing pods for the API test server's kubelet: a model pod runs as
`python -m inference_app`, a gateway pod as `python -m gpuscale_gateway`, each with its container's
env and args on its own 127.0.0.x, as a kubelet would run the images."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gpuscale.podproc import PodProcess, ServerProcess

from kube_test_server.kubelet import http_ready
from kube_test_server.store import Obj


@dataclass
class Played:
    """A pod played by a local process (a PodHandle for the test server's kubelet)."""

    process: ServerProcess
    ip: str
    port: int | None
    ready_url: str

    async def ready(self) -> bool:
        return await http_ready(self.ready_url)

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def exited(self) -> int | None:
        return self.process.proc.poll()


@dataclass
class ProcessRuntime:
    """Runs a model pod as `python -m inference_app` and a gateway pod as `python -m gpuscale_gateway` with
    the container's own env and args, each on its own 127.0.0.x, as a kubelet would run the images."""

    kubeconfig: Path | None = None  # for gateway pods: how they reach the API
    started: dict[str, Played] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_ip: int = 20
    closed: bool = False

    def start(self, pod: Obj) -> Played:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
        with self.lock:
            if self.closed:
                raise RuntimeError("the test is over: no more pods")  # the kubelet must not restart them
            ip = f"127.0.0.{self.next_ip}"
            self.next_ip += 1
            if container.get("command") == ["gpuscale", "gateway"]:
                assert self.kubeconfig is not None, "a gateway pod needs the runtime's kubeconfig"
                args = [a.replace("0.0.0.0", ip) for a in container["args"]]
                env = {**env, "KUBECONFIG": str(self.kubeconfig), "GPUSCALE_GATEWAY_LOG_LEVEL": "warning"}
                process = ServerProcess([sys.executable, "-m", "gpuscale_gateway", *args], env=env)
                admin = next(a.split("=", 1)[1] for a in args if a.startswith("--admin-port="))
                played = Played(process, ip, None, f"http://{ip}:{admin}/readyz")
            else:
                port = container["ports"][0]["containerPort"]
                process = PodProcess(["--port", str(port), "--log-level", "warning"], host=ip, env=env)
                played = Played(process, ip, port, f"http://{ip}:{port}/v2/health/ready")
            self.started[pod["metadata"]["name"]] = played
        return played

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            started = list(self.started.values())
        for played in started:
            played.process.kill()
