"""The pod server's FastAPI app: Open Inference Protocol routes in front of the slot queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive

from inference_app import __version__
from inference_app.exit_codes import EXIT_DRAIN_INCOMPLETE, EXIT_OK, EXIT_USAGE
from inference_app.metrics import Outcome, PodMetrics
from inference_app.models import Model, ModelOutput, create_model
from inference_app.protocol import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadata,
)
from inference_app.settings import ServerSettings
from inference_app.slots import Aborted, JobFailed, NotAccepting, QueueFull, SlotQueue, Ticket

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
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=target, name="gpuscale-load", daemon=True).start()
    return future


class PodRuntime:
    """What the routes, the lifespan and the signal handler share."""

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

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await run_in_daemon_thread(self.model.load)
            await run_in_daemon_thread(self.model.warmup)
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
            self.exit_code = EXIT_DRAIN_INCOMPLETE
        self._request_exit()


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _describe_error(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    detail = error.get("ctx", {}).get("error") if error["type"] == "json_invalid" else None
    return f"{where}: {error['msg']}" + (f" ({detail})" if detail else "")


async def _wait_disconnect(receive: Receive) -> None:
    # The body has been read, so the next message can only be the disconnect (or the end of the response).
    while (await receive())["type"] != "http.disconnect":
        pass


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body could not be read (not UTF-8 JSON)."},
    404: {"model": ErrorResponse, "description": "No model of that name here."},
    429: {"model": ErrorResponse, "description": "All slots busy and the queue full; see Retry-After."},
    500: {"model": ErrorResponse, "description": "The model failed while running the request."},
    503: {"model": ErrorResponse, "description": "Loading, or draining: try another replica."},
}


def create_app(settings: ServerSettings, model: Model[Any] | None = None) -> FastAPI:
    runtime = PodRuntime(settings, model or create_model(settings))
    served = settings.served_name
    metrics = runtime.metrics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Loading starts here but runs in the background: the server answers liveness (and reports
        # not-ready) while a large model loads.
        await runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="gpuscale pod server",
        version=__version__,
        summary="Open Inference Protocol (v2) REST server with one request per slot and a bounded queue.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's 422 body, plus the protocol's one-line "error" that says what to fix.
        if request.method == "POST":
            metrics.count(Outcome.INVALID)
        errors = exc.errors()
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            summary = f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})"
        else:
            summary = "; ".join(map(_describe_error, errors))
        return JSONResponse({"error": summary, "detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Starlette's own errors (a body that is not UTF-8, an unknown path) in the protocol's shape.
        if request.method == "POST" and exc.status_code < 500:
            metrics.count(Outcome.INVALID)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    def unknown_model(name: str) -> JSONResponse:
        return _error(404, f"model {name!r} not found; this server serves {served!r}")

    def unavailable() -> JSONResponse:
        reason = runtime.not_ready_reason or "not ready"
        # Connection: close sends the client's next attempt through the load balancer again.
        headers = {"Retry-After": "1", "Connection": "close"} if runtime.draining else {"Retry-After": "1"}
        return _error(503, reason, headers)

    @app.get("/v2/health/live", response_model=LiveResponse, tags=["health"])
    async def live() -> LiveResponse:
        return LiveResponse(live=True)

    @app.get(
        "/v2/health/ready",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Loading or draining."}},
        tags=["health"],
    )
    async def ready() -> Response:
        if runtime.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": runtime.not_ready_reason}, status_code=503)

    @app.get("/v2", response_model=ServerMetadata, tags=["metadata"])
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="gpuscale", version=__version__, extensions=[])

    @app.get(
        "/v2/models/{model_name}",
        response_model=ModelMetadata,
        responses={404: _ERRORS[404]},
        tags=["metadata"],
    )
    async def model_metadata(model_name: str) -> Response | ModelMetadata:
        if model_name != served:
            return unknown_model(model_name)
        m = runtime.model
        return ModelMetadata(
            name=served,
            platform=m.platform,
            inputs=m.inputs,
            outputs=m.outputs,
            parameters={"kind": m.kind, "slots": settings.slots, "max_queue": settings.max_queue},
        )

    @app.get(
        "/v2/models/{model_name}/ready",
        response_model=ModelReadyResponse,
        responses={404: _ERRORS[404], 503: {"model": ModelReadyResponse, "description": "Not ready."}},
        tags=["health"],
    )
    async def model_ready(model_name: str) -> Response:
        if model_name != served:
            return unknown_model(model_name)
        body = {"name": served, "ready": runtime.ready, "reason": runtime.not_ready_reason}
        return JSONResponse(body, status_code=200 if runtime.ready else 503)

    async def infer(model_name: str, body: InferenceRequest, request: Request) -> Response:
        if model_name != served:
            metrics.count(Outcome.NOT_FOUND)
            return unknown_model(model_name)
        if not runtime.ready:
            metrics.count(Outcome.UNAVAILABLE)
            return unavailable()
        job = runtime.model.job_for(body)
        try:
            ticket: Ticket[Any, ModelOutput] = runtime.queue.submit(job)
        except QueueFull as exc:
            metrics.count(Outcome.REJECTED_FULL)
            return _error(
                429,
                f"all {settings.slots} slot(s) busy and {settings.max_queue} request(s) queued; "
                f"retry in about {exc.retry_after} s",
                {"Retry-After": str(exc.retry_after)},
            )
        except NotAccepting:
            metrics.count(Outcome.UNAVAILABLE)
            return unavailable()
        return await _answer(ticket, body, request)

    # The body is validated against the served model's own request schema (its parameters and their
    # bounds), which is also what /openapi.json and /docs show.
    infer.__annotations__["body"] = runtime.model.request_model
    app.post(
        "/v2/models/{model_name}/infer",
        response_model=None,
        responses={200: {"model": InferenceResponse, "description": "The model's answer."}, **_ERRORS},
        tags=["inference"],
    )(infer)

    async def _answer(ticket: Ticket[Any, ModelOutput], body: InferenceRequest, request: Request) -> Response:
        queue = runtime.queue
        disconnected = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait((ticket.future, disconnected), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            queue.cancel(ticket)
            raise
        finally:
            disconnected.cancel()
        if not ticket.future.done():
            never_ran = queue.cancel(ticket)
            metrics.count(Outcome.CANCELLED if never_ran else Outcome.ABANDONED)
            return Response(status_code=499)  # nobody reads it: the client is gone
        try:
            output = ticket.future.result()
        except Aborted as exc:
            metrics.count(Outcome.ABORTED)
            return _error(503, str(exc), {"Connection": "close"})
        except JobFailed as exc:
            metrics.count(Outcome.FAILED)
            log.error("model failed on a request: %s", exc)
            return _error(500, f"model failed: {exc}")
        service = ticket.service_seconds
        metrics.observe(ticket.queue_seconds, service, time.monotonic() - ticket.enqueued)
        metrics.count(Outcome.OK)
        parameters: dict[str, Any] = {
            "queue_seconds": ticket.queue_seconds,
            "service_seconds": service,
            "started_at": ticket.started_wall,
        }
        parameters.update(output.parameters)
        response: dict[str, Any] = {
            "model_name": served,
            "outputs": [o.model_dump(exclude_none=True) for o in output.outputs],
            "parameters": parameters,
        }
        if body.id is not None:
            response["id"] = body.id
        return JSONResponse(response)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
        tags=["metrics"],
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
