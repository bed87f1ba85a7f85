"""What the routes, the lifespan and the signal handler share: settings, model, slot queue, metrics,
readiness, and the drain."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from inference_app.exit_codes import EXIT_DRAIN_INCOMPLETE, EXIT_OK, EXIT_USAGE
from inference_app.metrics import PodMetrics
from inference_app.models import Model, ModelOutput
from inference_app.settings import ServerSettings
from inference_app.slots import SlotQueue, post_to_loop

log = logging.getLogger("inference_app")

T = TypeVar("T")


def run_in_daemon_thread(fn: Callable[[], T]) -> Awaitable[T]:
    """Like asyncio.to_thread, but on a daemon thread: a model load that outlives a SIGTERM must not
    keep the process alive (the default executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        post_to_loop(loop, deliver, result, error)

    threading.Thread(target=target, name="gpuscale-load", daemon=True).start()
    return future


class PodRuntime:
    """One pod server's state. The slot queue is made anew for each lifespan; the model loads once."""

    def __init__(self, settings: ServerSettings, model: Model[Any]) -> None:
        self.settings = settings
        self.model = model
        self.queue = self._new_queue()
        self.metrics = PodMetrics(lambda: self.queue.load(), lambda: self.ready, lambda: self.draining)
        self.loaded = False
        self.load_error: str | None = None
        self.draining = False
        self.exit_code = EXIT_OK
        self._request_exit: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

    @property
    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "draining"
        if self.load_error is not None:
            return f"model failed to load: {self.load_error}"
        if not self.loaded:
            return "loading model"
        return None

    def unknown_model(self, name: str) -> str:
        return f"model {name!r} not found; this server serves {self.settings.served_name!r}"

    def on_exit_request(self, request_exit: Callable[[], None]) -> None:
        """The server runner's hook to stop serving once the runtime is done (drained or failed)."""
        self._request_exit = request_exit

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_queue(self) -> SlotQueue[Any, ModelOutput]:
        return SlotQueue(
            self.model.run,
            slots=self.settings.slots,
            max_queue=self.settings.max_queue,
            expected_seconds=self.model.expected_seconds,
        )

    async def start(self) -> None:
        # A second lifespan in one process (test harnesses do this) gets fresh slots; a model that
        # has loaded stays loaded.
        if self.queue.started:
            self.queue = self._new_queue()
        self.queue.start()
        if not self.loaded:
            self._spawn(self._load())

    def stop(self) -> None:
        self.queue.stop()

    def _load_model(self) -> None:
        self.model.check()
        self.model.load()
        self.model.warmup()

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await run_in_daemon_thread(self._load_model)
        except Exception as exc:
            self.load_error = str(exc) or type(exc).__name__
            self.exit_code = EXIT_USAGE
            log.error("model failed to load: %s", self.load_error)
            self._request_exit()
            return
        self.loaded = True
        log.info(
            "ready: %s, loaded and warmed up in %.2f s", self.model.description, time.perf_counter() - started
        )

    def on_signal(self, signame: str) -> None:
        """First SIGTERM/SIGINT: drain. A second one: stop now, failing what has not answered."""
        if self._drain_task is None:
            self._drain_task = self._spawn(self.drain(signame))
            return
        failed = self.queue.abort("the server was stopped before this request finished")
        log.warning("%s again: stopping now; %d admitted request(s) answered 503", signame, failed)
        if failed:
            self.exit_code = EXIT_DRAIN_INCOMPLETE
        self._request_exit()

    async def drain(self, signame: str = "drain") -> None:
        self.draining = True
        load = self.queue.load()
        deadline = self.settings.drain_seconds
        log.info(
            "%s: draining %d running and %d queued request(s), up to %g s; new requests get 503",
            signame,
            load.running,
            load.queued,
            deadline,
        )
        if await self.queue.drain(deadline):
            log.info("drained: every admitted request was answered")
        else:
            failed = self.queue.abort(f"drain time ran out ({deadline:g} s) before this request finished")
            log.error("drain time ran out after %g s: %d request(s) answered 503", deadline, failed)
            if failed:
                self.exit_code = EXIT_DRAIN_INCOMPLETE
        self._request_exit()
