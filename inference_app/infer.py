"""`POST /v2/models/{name}/infer` as a lean ASGI handler.

This is the one route on every request's path, so it runs in front of FastAPI's routing, dependency
solving and middleware layers (which cost more than the rest of the request for short jobs; see
docs/why-one-slot.md). It validates the body with the served model's pydantic request model, the same
model that documents it in /openapi.json (`infer_openapi`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from pydantic_core import to_json
from starlette.types import ASGIApp, Receive, Scope, Send

from inference_app.asgi import Headers, read_body, send_error, send_json, wait_disconnect
from inference_app.metrics import Outcome
from inference_app.models import ModelOutput
from inference_app.protocol import ErrorResponse, InferenceResponse, ValidationErrorResponse
from inference_app.runtime import PodRuntime, log
from inference_app.slots import Aborted, JobFailed, NotAccepting, QueueFull, Ticket

PREFIX = "/v2/models/"
SUFFIX = "/infer"
PATH_TEMPLATE = PREFIX + "{model_name}" + SUFFIX
MAX_BODY_BYTES = 64 * 1024 * 1024
# On a 429 or 503 that refused the request before the model saw it: a gateway may safely send the
# same request to another replica.
NOT_ADMITTED = b"gpuscale-not-admitted"


def body_errors(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line summary and FastAPI-shaped `detail` (locations start at "body")."""
    # Without the inputs: they can be bytes that are not UTF-8, or a whole large body echoed back.
    detail = json.loads(to_json(exc.errors(include_url=False, include_input=False), fallback=str))
    for error in detail:
        error["loc"] = ["body", *error["loc"]]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in detail)
    return summary, detail


def _is_json(headers: Headers) -> tuple[bool, str]:
    for name, value in headers:
        if name == b"content-type":
            content_type = value.decode("latin-1")
            media = content_type.split(";", 1)[0].strip().lower()
            return media == "application/json" or media.endswith("+json"), content_type
    return False, ""


class InferEndpoint:
    def __init__(self, runtime: PodRuntime) -> None:
        self.runtime = runtime
        self.served = runtime.settings.served_name

    @staticmethod
    def matches(scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        path: str = scope["path"]
        # `/v2/models/infer` is the metadata of a model named "infer": the name must not be empty.
        return (
            len(path) > len(PREFIX) + len(SUFFIX)
            and path.startswith(PREFIX)
            and path.endswith(SUFFIX)
            and "/" not in path[len(PREFIX) : -len(SUFFIX)]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        metrics = runtime.metrics
        if scope["method"] != "POST":
            return await send_error(send, 405, "use POST", [(b"allow", b"POST")])
        read = await read_body(receive, MAX_BODY_BYTES)
        if read is None:
            return None  # the client left before it finished sending
        body, complete = read
        if not complete or len(body) > MAX_BODY_BYTES:
            metrics.count(Outcome.INVALID)
            return await send_error(send, 413, f"body larger than {MAX_BODY_BYTES >> 20} MiB")
        name = scope["path"][len(PREFIX) : -len(SUFFIX)]
        if name != self.served:
            metrics.count(Outcome.NOT_FOUND)
            return await send_error(send, 404, runtime.unknown_model(name))
        if not runtime.ready:
            metrics.count(Outcome.UNAVAILABLE)
            return await self._unavailable(send)
        is_json, content_type = _is_json(scope["headers"])
        if not is_json:
            metrics.count(Outcome.INVALID)
            message = f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})"
            return await send_json(send, 422, {"error": message, "detail": []})
        model = runtime.model
        try:
            request = model.request_model.model_validate_json(body)
        except ValidationError as exc:
            metrics.count(Outcome.INVALID)
            summary, detail = body_errors(exc)
            return await send_json(send, 422, {"error": summary, "detail": detail})
        queue = runtime.queue
        try:
            ticket: Ticket[Any, ModelOutput] = queue.submit(model.job_for(request))
        except QueueFull as full:
            metrics.count(Outcome.REJECTED_FULL)
            settings = runtime.settings
            message = (
                f"all {settings.slots} slot(s) busy and {settings.max_queue} request(s) queued; "
                f"retry in about {full.retry_after} s"
            )
            headers = [(b"retry-after", b"%d" % full.retry_after), (NOT_ADMITTED, b"queue-full")]
            return await send_error(send, 429, message, headers)
        except NotAccepting:
            metrics.count(Outcome.UNAVAILABLE)
            return await self._unavailable(send)

        # Watch for the client leaving while the job waits: a queued job it leaves behind never runs.
        left: list[bool] = []

        def client_left(watcher: asyncio.Task[None]) -> None:
            if not watcher.cancelled():
                left.append(queue.cancel(ticket))

        watcher = asyncio.get_running_loop().create_task(wait_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            output = await ticket.future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if left and not (task and task.cancelling()):
                metrics.count(Outcome.CANCELLED if left[0] else Outcome.ABANDONED)
                return None  # nobody to answer
            queue.cancel(ticket)  # this task itself was cancelled: the server is stopping
            raise
        except Aborted as exc:
            metrics.count(Outcome.ABORTED)
            return await send_error(send, 503, str(exc), [(b"connection", b"close")])
        except JobFailed as exc:
            metrics.count(Outcome.FAILED)
            log.error("model failed on a request: %s", exc)
            return await send_error(send, 500, f"model failed: {exc}")
        finally:
            watcher.cancel()
        metrics.observe(ticket.queue_seconds, ticket.service_seconds, time.monotonic() - ticket.enqueued)
        metrics.count(Outcome.OK)
        parameters: dict[str, Any] = {
            "queue_seconds": ticket.queue_seconds,
            "service_seconds": ticket.service_seconds,
            "started_at": ticket.started_wall,
        }
        parameters.update(output.parameters)
        answer: dict[str, Any] = {
            "model_name": self.served,
            "outputs": output.outputs,
            "parameters": parameters,
        }
        if request.id is not None:
            answer["id"] = request.id
        return await send_json(send, 200, to_json(answer, exclude_none=True))

    async def _unavailable(self, send: Send) -> None:
        runtime = self.runtime
        headers: Headers = [(b"retry-after", b"1"), (NOT_ADMITTED, b"unavailable")]
        if runtime.draining:
            headers.append((b"connection", b"close"))  # the next attempt goes through the load balancer again
        await send_error(send, 503, runtime.not_ready_reason or "not accepting requests", headers)


class InferFastPath:
    """ASGI middleware: infer requests go straight to the endpoint, everything else to the app."""

    def __init__(self, app: ASGIApp, endpoint: InferEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.endpoint.matches(scope):
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _json(ref: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}, **extra}


def infer_openapi(request_model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI operation for the infer route, and the component schemas it refers to."""
    refs, schemas = models_json_schema(
        [
            (request_model, "validation"),
            (InferenceResponse, "serialization"),
            (ErrorResponse, "serialization"),
            (ValidationErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    error = refs[(ErrorResponse, "serialization")]
    retry_after = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    operation = {
        "tags": ["inference"],
        "summary": "Infer",
        "description": "Run one request on the model: at once when a slot is free, else after the requests "
        "queued before it.",
        "operationId": "infer",
        "parameters": [{"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": refs[(request_model, "validation")]}},
        },
        "responses": {
            "200": _json(refs[(InferenceResponse, "serialization")], "The model's answer."),
            "404": _json(error, "No model of that name here."),
            "413": _json(error, f"The body is larger than {MAX_BODY_BYTES >> 20} MiB."),
            "422": _json(
                refs[(ValidationErrorResponse, "serialization")],
                "The body does not match the model's request schema, or is not JSON.",
            ),
            "429": _json(error, "All slots busy and the queue full.", headers=retry_after),
            "500": _json(error, "The model failed while running the request."),
            "503": _json(error, "Loading, or draining: try another replica.", headers=retry_after),
        },
    }
    return operation, schemas.get("$defs", {})
