"""Runs the app under one uvicorn worker, with a drain on SIGTERM instead of uvicorn's plain stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import uvicorn

from inference_app.app import create_app
from inference_app.models import Model
from inference_app.runtime import PodRuntime
from inference_app.settings import ServerSettings


class Drainable(Protocol):
    """What DrainingServer drives: the pod's runtime, or the gateway."""

    exit_code: int

    def on_signal(self, signame: str) -> None: ...

    def on_exit_request(self, request_exit: Callable[[], None]) -> None: ...


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, except that a signal starts a drain rather than closing the listener.

    uvicorn would stop accepting at once and, after a clean stop, re-raise the signal (exit 143).
    Here the pod keeps answering health checks (503 ready) and new requests (503) until every
    admitted request is answered, then exits with the runtime's exit code.
    """

    def __init__(self, config: uvicorn.Config, runtime: Drainable, listening: str) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.listening = listening
        self._loop: asyncio.AbstractEventLoop | None = None
        runtime.on_exit_request(self._exit)

    def _exit(self) -> None:
        self.should_exit = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Printed whatever the log level, once signals lead to a drain: it is how a parent process
        # learns that the server runs, and the port of `--port 0`.
        print(self.listening, file=sys.stderr, flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: hand the work to the event loop and return.
        loop = self._loop
        if loop is None or not self.started:
            self.should_exit = True  # still starting up: nothing was admitted, stop plainly
            return
        if self.should_exit:
            self.force_exit = True  # already drained and shutting down: stop waiting on connections
        loop.call_soon_threadsafe(self.runtime.on_signal, signal.Signals(sig).name)


class CannotListen(Exception):
    """A listening socket could not be bound (busy port, bad address); the message says which."""


def listen(host: str, port: int) -> socket.socket:
    """Bind before serving, so a busy port is a clear CLI error and `--port 0` can report its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}") from exc


def address(sock: socket.socket) -> str:
    """The URL a listening socket serves, e.g. `http://127.0.0.1:8000` or `http://[::1]:8000`."""
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def server_config(app: Any, log_level: str, **options: Any) -> uvicorn.Config:
    """uvicorn as both our servers run it: one worker, uvloop and httptools when installed, no access
    log and no proxy-header parsing on the request path, our own logging set-up."""
    return uvicorn.Config(
        app,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=5,  # only after our drain, which has already answered everything
        **options,
    )


def serve(settings: ServerSettings, sock: socket.socket, model: Model[Any], **uvicorn_options: Any) -> int:
    app = create_app(settings, model)
    runtime: PodRuntime = app.state.runtime
    config = server_config(app, settings.log_level, **uvicorn_options)
    DrainingServer(config, runtime, listening_line(settings, sock)).run(sockets=[sock])
    return runtime.exit_code


def listening_line(settings: ServerSettings, sock: socket.socket) -> str:
    return (
        f"listening on {address(sock)} (model {settings.model} as {settings.served_name!r}, "
        f"{settings.slots} slot(s), queue {settings.max_queue})"
    )
