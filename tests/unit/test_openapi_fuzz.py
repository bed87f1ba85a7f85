"""Schemathesis against the app's own OpenAPI document: no 5xx for any generated input, and every
answer matches what the document says (status codes, bodies, content types)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.python import asgi

from inference_app.app import create_app
from inference_app.settings import ServerSettings
from tests.conftest import wait_until


def _schema(settings: ServerSettings) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    # Loading the document started the app's lifespan; wait for the model so requests reach it.
    client = asgi.get_client(schema.app)
    with client:
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200)
    return schema


# Small limits, so generated parameters are answered in milliseconds (or refused with 422).
sleep_schema = _schema(ServerSettings(model="sleep", max_request_seconds=0.005, sleep_seconds=0.0))
matmul_schema = _schema(
    ServerSettings(
        model="matmul",
        matmul_backend="numpy",
        matmul_size=8,
        matmul_iterations=2,
        matmul_max_size=16,
        matmul_max_iterations=3,
    )
)

FUZZ = hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _call(case: schemathesis.Case[Any], served: str | None) -> None:
    # Free-form model names almost never hit the served one; pinning it sends the bodies to the model.
    if served is not None and case.path_parameters and "model_name" in case.path_parameters:
        case.path_parameters["model_name"] = served
    case.call_and_validate()


@sleep_schema.parametrize()
@FUZZ
def test_sleep_server_any_model_name(case: schemathesis.Case[Any]) -> None:
    _call(case, None)


@sleep_schema.parametrize()
@FUZZ
def test_sleep_server_served_model(case: schemathesis.Case[Any]) -> None:
    _call(case, "sleep")


@matmul_schema.parametrize()
@FUZZ
def test_matmul_server_served_model(case: schemathesis.Case[Any]) -> None:
    _call(case, "matmul")
