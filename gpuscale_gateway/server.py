"""The gateway as one object (`Gateway`, an ASGI app serving both ports), and how to run it: under
uvicorn in this process's main thread (`serve`), or as a task inside a running event loop
(`running`, for tests and embedding)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import uvicorn
from starlette.types import Receive, Scope, Send

from gpuscale_gateway.admin import Admin
from gpuscale_gateway.discovery import Discovery, StaticDiscovery
from gpuscale_gateway.dispatch import Dispatcher
from gpuscale_gateway.health import watch_down_replicas
from gpuscale_gateway.metrics import GatewayMetrics
from gpuscale_gateway.proxy import Proxy
from gpuscale_gateway.registry import Registry
from gpuscale_gateway.settings import GatewaySettings
from inference_app.exit_codes import EXIT_DRAIN_INCOMPLETE, EXIT_OK
from inference_app.server import CannotListen, DrainingServer, address, listen, server_config

log = logging.getLogger("gpuscale_gateway")

DRAIN_POLL_SECONDS = 0.02


def discoveries_from(settings: GatewaySettings) -> list[Discovery]:
    """The `replicas` setting, plus the pods when `discovery` is kubernetes. Raises KubeConfigError
    (a ValueError) when that lacks its settings or finds no way to reach the API."""
    discoveries: list[Discovery] = [StaticDiscovery(settings.static_replicas)]
    if settings.discovery == "kubernetes":
        # Imported here: a static gateway needs neither httpx nor the kubeconfig reader.
        from gpuscale_gateway.kube_discovery import KubeDiscovery

        discoveries.append(KubeDiscovery.from_settings(settings))
    return discoveries


class Gateway:
    """The gateway's state and its ASGI app: the clients' port is the proxy, the admin port the admin
    API (told apart by the local port a connection came in on).

    Replicas come from `discoveries` (default: the `replicas` setting); more can be added through
    `registry` or the admin API. `on_signal` drains: new requests get 503, everything queued and
    in flight is answered, then the server is asked to exit with `exit_code`.
    """

    def __init__(self, settings: GatewaySettings, discoveries: Sequence[Discovery] | None = None) -> None:
        self.settings = settings
        self.registry = Registry(
            default_slots=settings.slots, connect_timeout=settings.connect_timeout_seconds
        )
        self.dispatcher = Dispatcher(
            self.registry,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout_seconds,
            prefetch=settings.prefetch,
        )
        self.metrics = GatewayMetrics(self.registry, self.dispatcher)
        self.proxy = Proxy(settings, self.registry, self.dispatcher, self.metrics)
        self.admin = Admin(self)
        self.discoveries: list[Discovery] = (
            discoveries_from(settings) if discoveries is None else list(discoveries)
        )
        self.admin_port: int | None = None  # set once the admin socket is bound
        self.exit_code = EXIT_OK
        self._request_exit: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain_task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self.proxy.draining

    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            if server is not None and server[1] == self.admin_port:
                return await self.admin(scope, receive, send)
            return await self.proxy(scope, receive, send)
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        return None  # websockets are not proxied (uvicorn runs with ws="none")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # lifecycle

    def _spawn(self, coro: Awaitable[None], what: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("%s failed: %s", what, exc, exc_info=exc)

        task.add_done_callback(done)
        return task

    async def start(self) -> None:
        """Start the discoveries and the health prober (the lifespan does this under uvicorn)."""
        for discovery in self.discoveries:
            self._spawn(discovery.run(self.registry), f"discovery {type(discovery).__name__}")
        self._spawn(watch_down_replicas(self.registry, self.settings.health_path), "health prober")

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in self.registry:
            replica.pool.close()

    # drain (DrainingServer calls on_signal and on_exit_request, and reads exit_code)

    def on_exit_request(self, request_exit: Callable[[], None]) -> None:
        self._request_exit = request_exit

    def on_signal(self, signame: str) -> None:
        """First SIGTERM/SIGINT: drain. A second one: stop now, failing what has not been answered."""
        if self._drain_task is None:
            self._drain_task = self._spawn(self.drain(signame), "drain")
            return
        failed = self._abort("the gateway was stopped before this request was answered")
        log.warning("%s again: stopping now; %d request(s) answered 503", signame, failed)
        if failed:
            self.exit_code = EXIT_DRAIN_INCOMPLETE
        self._request_exit()

    def _abort(self, reason: str) -> int:
        return self.dispatcher.abort_waiting(reason) + self.proxy.abort_active(reason)

    def _busy(self) -> bool:
        return bool(self.dispatcher.queue or self.dispatcher.inflight or self.proxy.passthrough)

    async def drain(self, signame: str = "drain") -> None:
        """Refuse new requests; answer every queued and in-flight one; then ask the server to exit."""
        self.proxy.draining = True
        seconds = self.settings.drain_seconds
        log.info(
            "%s: draining %d queued and %d in-flight request(s), up to %g s; new requests get 503",
            signame,
            len(self.dispatcher.queue),
            self.dispatcher.inflight,
            seconds,
        )
        deadline = time.monotonic() + seconds
        # Polled: the load changes in many places, and a drain happens once.
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if self._busy():
            failed = self._abort(f"drain time ran out ({seconds:g} s) before this request was answered")
            log.error("drain time ran out after %g s: %d request(s) answered 503", seconds, failed)
            if failed:
                self.exit_code = EXIT_DRAIN_INCOMPLETE
        else:
            log.info("drained: every request was answered")
        self._request_exit()


class GatewayServer(DrainingServer):
    """uvicorn with the drain on signals; `handle_signals=False` when embedded (the host owns them)."""

    def __init__(
        self, config: uvicorn.Config, gateway: Gateway, listening: str, handle_signals: bool = True
    ) -> None:
        super().__init__(config, gateway, listening)
        self.handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


def listening_line(settings: GatewaySettings, client: socket.socket, admin: socket.socket) -> str:
    return (
        f"gateway listening on {address(client)} (admin {address(admin)}, queue {settings.max_queue}, "
        f"prefetch {settings.prefetch})"
    )


def bind(settings: GatewaySettings) -> tuple[socket.socket, socket.socket]:
    """Both listening sockets, bound before serving (a busy port is a clear error, port 0 reportable)."""
    client = listen(settings.host, settings.port)
    try:
        admin = listen(settings.admin_host, settings.admin_port)
    except CannotListen:
        client.close()
        raise
    if admin.getsockname()[1] == client.getsockname()[1]:
        # Different hosts, same port: the one server could not tell the two apart.
        client.close()
        admin.close()
        raise CannotListen(f"the clients' and admin ports must differ (both {settings.port})")
    return client, admin


def server_for(
    gateway: Gateway, client: socket.socket, admin: socket.socket, handle_signals: bool = True
) -> GatewayServer:
    settings = gateway.settings
    gateway.admin_port = admin.getsockname()[1]
    # No Server or Date header of its own: the replica's pass through.
    config = server_config(gateway, settings.log_level, ws="none", server_header=False, date_header=False)
    return GatewayServer(config, gateway, listening_line(settings, client, admin), handle_signals)


def serve(
    settings: GatewaySettings,
    sockets: tuple[socket.socket, socket.socket] | None = None,
    discoveries: Sequence[Discovery] | None = None,
) -> int:
    """Run the gateway until it has drained (SIGTERM) or is stopped; the exit code."""
    client, admin = sockets if sockets is not None else bind(settings)
    gateway = Gateway(settings, discoveries)
    server_for(gateway, client, admin).run(sockets=[client, admin])
    return gateway.exit_code


class RunningGateway:
    """A gateway serving inside the current event loop (see `running`)."""

    def __init__(self, gateway: Gateway, server: GatewayServer, url: str, admin_url: str) -> None:
        self.gateway = gateway
        self.server = server
        self.url = url
        self.admin_url = admin_url


@contextlib.asynccontextmanager
async def running(
    settings: GatewaySettings | None = None, discoveries: Sequence[Discovery] | None = None
) -> AsyncIterator[RunningGateway]:
    """Serve a gateway on this event loop while the block runs (ports picked by the OS unless the
    settings name them); stopped, not drained, at the end. For tests and for embedding."""
    settings = settings or GatewaySettings(port=0, admin_port=0)
    client, admin = bind(settings)
    gateway = Gateway(settings, discoveries)
    server = server_for(gateway, client, admin, handle_signals=False)
    task = asyncio.ensure_future(server.serve(sockets=[client, admin]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the gateway stopped while starting")
        await asyncio.sleep(0.005)
    try:
        yield RunningGateway(gateway, server, address(client), address(admin))
    finally:
        server.should_exit = True
        await task
        client.close()
        admin.close()
