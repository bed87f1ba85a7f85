"""The baseline for the overhead benchmark: a bare Starlette endpoint on the same uvicorn settings that
parses the same body and returns the same JSON as the pod server's 0-second sleep job, with no queue,
no slot thread, no validation and no metrics."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def infer(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    seconds = body.get("parameters", {}).get("seconds", 0.0)
    return JSONResponse(
        {
            "model_name": "sleep",
            "outputs": [{"name": "slept_seconds", "shape": [1], "datatype": "FP64", "data": [seconds]}],
            "parameters": {"queue_seconds": 0.0, "service_seconds": 0.0, "started_at": 0.0},
        }
    )


app = Starlette(routes=[Route("/v2/models/sleep/infer", infer, methods=["POST"])])
