"""The pod server's FastAPI app: Open Inference Protocol routes in front of the slot queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference_app import __version__
from inference_app.infer import PATH_TEMPLATE, InferEndpoint, InferFastPath, infer_openapi
from inference_app.models import Model, create_model
from inference_app.protocol import (
    ErrorResponse,
    LiveResponse,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadata,
)
from inference_app.runtime import PodRuntime
from inference_app.settings import ServerSettings

TITLE = "gpuscale pod server"
SUMMARY = "Open Inference Protocol (v2) REST server with one request per slot and a bounded queue."


def create_app(settings: ServerSettings, model: Model[Any] | None = None) -> FastAPI:
    runtime = PodRuntime(settings, model or create_model(settings))
    served = settings.served_name

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Loading starts here but runs in the background: the server answers liveness (and reports
        # not-ready) while a large model loads.
        await runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(title=TITLE, version=__version__, summary=SUMMARY, lifespan=lifespan)
    app.state.runtime = runtime
    app.add_middleware(InferFastPath, endpoint=InferEndpoint(runtime))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods, in the protocol's error shape.
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    def unknown_model(name: str) -> JSONResponse:
        return JSONResponse({"error": runtime.unknown_model(name)}, 404)

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "No such model."}
    }

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

    @app.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=not_found, tags=["metadata"])
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
        responses={**not_found, 503: {"model": ModelReadyResponse, "description": "Not ready."}},
        tags=["health"],
    )
    async def model_ready(model_name: str) -> Response:
        if model_name != served:
            return unknown_model(model_name)
        body = {"name": served, "ready": runtime.ready, "reason": runtime.not_ready_reason}
        return JSONResponse(body, status_code=200 if runtime.ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
        tags=["metrics"],
    )
    async def prometheus_metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        # The infer route is served by InferFastPath, not a FastAPI route: its operation is built from
        # the same pydantic models that validate it.
        if app.openapi_schema is None:
            schema = get_openapi(title=TITLE, version=__version__, summary=SUMMARY, routes=app.routes)
            operation, components = infer_openapi(runtime.model.request_model)
            schema["paths"][PATH_TEMPLATE] = {"post": operation}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
