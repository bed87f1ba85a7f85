"""Running the test server on its own thread and event loop, with a kubeconfig for kopf, clients, kubectl."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from aiohttp import web

from kube_test_server.app import ApiState, Fault, Request, make_app
from kube_test_server.store import Obj, Store

T = TypeVar("T")


class Controller(Protocol):
    """Something that plays a part of kube-controller-manager or the kubelet against the store."""

    name: str

    async def run(self, store: Store) -> None: ...


class KubeTestServer:
    """A Kubernetes API test server on ``http://host:port``; ``port=0`` picks a free one.

    The store lives on the server's loop; ``call`` runs a function there from any thread, so a test
    can seed or inspect objects without racing the requests being served.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        controllers: Iterable[Controller] = (),
        bookmark_interval: float = 1.0,
        history_size: int = 10_000,
    ) -> None:
        self.host, self.port = host, port
        self.store = Store(history_size=history_size)
        self.state = ApiState(self.store, bookmark_interval=bookmark_interval)
        self.controllers = list(controllers)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def evidence(self) -> list[Request]:
        return self.call(lambda _: list(self.state.evidence))

    def clear_evidence(self) -> None:
        self.call(lambda _: self.state.evidence.clear())

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="kube-test-server", daemon=True
        )
        self._thread.start()
        ready.result(timeout=30)
        return self.url

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # a failed start must reach the caller, not die on this thread
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stopped = asyncio.Event()
        runner = web.AppRunner(
            make_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self.state.address = f"{self.host}:{self.port}"
        for controller in self.controllers:
            self._tasks.append(asyncio.create_task(controller.run(self.store), name=controller.name))
        ready.set_result(None)
        try:
            await self._stopped.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for drop in list(self.state.watch_drops):
                drop.set()
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> KubeTestServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- reaching in from a test --------------------------------------------------------------------

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` on the server's loop and return what it returns (or raise what it raised)."""
        assert self._loop is not None, "the server is not running"

        async def run() -> T:
            return fn(self.store)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def apply(self, *manifests: Obj) -> list[Obj]:
        """Create objects as ``kubectl create`` would (no evidence recorded): seeds for a test."""

        def create(store: Store) -> list[Obj]:
            made = []
            for manifest in manifests:
                api_version, kind = manifest["apiVersion"], manifest["kind"]
                rtype = store.registry.by_kind(api_version, kind)
                if rtype is None:
                    raise LookupError(f"no served kind {kind} in {api_version}")
                namespace = (
                    manifest.get("metadata", {}).get("namespace", "default") if rtype.namespaced else None
                )
                made.append(store.create(rtype, namespace, manifest))
            return made

        return self.call(create)

    def apply_file(self, path: str | Path) -> list[Obj]:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        return self.apply(*docs)

    def inject_fault(
        self, status: int, method: str | None = None, path: str = "", times: int = 1, reason: str = ""
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (5xx, 409, 429...)."""
        fault = Fault(status, method, path, times, reason)
        self.call(lambda _: self.state.faults.append(fault))
        return fault

    def drop_watches(self) -> int:
        """Break every open watch stream, as a lost connection does; returns how many were open."""

        def drop(_: Store) -> int:
            drops = list(self.state.watch_drops)
            for d in drops:
                d.set()
            return len(drops)

        return self.call(drop)

    def compact(self) -> None:
        """Forget the change history: a watch from an older resourceVersion gets 410 Expired."""
        self.call(lambda store: store.compact())

    # --- clients ------------------------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-test-server", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "kube-test-server"}}],
            "contexts": [
                {
                    "name": "kube-test-server",
                    "context": {"cluster": "kube-test-server", "user": "test", "namespace": namespace},
                }
            ],
            "current-context": "kube-test-server",
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace)))
        return path


def cluster(gpus: int = 0, runtime: Any = None, nodes: int = 1, **options: Any) -> KubeTestServer:
    """A server (not started) with every built-in controller and ``nodes`` Ready nodes of ``gpus`` GPUs:
    what an operator test needs to see its Deployments become pods, slices and processes."""
    from kube_test_server.controllers import DeploymentController, EndpointSliceController
    from kube_test_server.kubelet import Kubelet, Scheduler, node

    controllers = [DeploymentController(), EndpointSliceController(), Scheduler(), Kubelet(runtime)]
    server = KubeTestServer(controllers=controllers, **options)
    node_type = server.store.type("", "v1", "nodes")
    for i in range(1, nodes + 1):
        # Safe before start: nothing else touches the store until the server's loop runs.
        server.store.create(node_type, None, node(f"node-{i}", gpus=gpus))
    return server
