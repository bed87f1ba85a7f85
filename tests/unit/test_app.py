"""The app in-process: protocol routes, readiness, errors, metrics text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from gpuscale.promtext import parse_samples

from inference_app import infer
from inference_app.app import create_app
from inference_app.exit_codes import EXIT_USAGE
from inference_app.models.sleep import SleepModel
from inference_app.settings import ServerSettings
from tests.conftest import wait_until

MakeClient = Callable[..., TestClient]


def test_health_and_metadata(app_client: MakeClient) -> None:
    client = app_client(model_name="sdxl")
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "gpuscale"
    meta = client.get("/v2/models/sdxl").json()
    assert meta["platform"] == "gpuscale_sleep"
    assert meta["outputs"] == [{"name": "slept_seconds", "datatype": "FP64", "shape": [1]}]
    assert client.get("/v2/models/sdxl/ready").json() == {"name": "sdxl", "ready": True, "reason": None}


@pytest.mark.parametrize("path", ["/v2/models/other", "/v2/models/other/ready"])
def test_unknown_model_is_404_with_the_served_name(app_client: MakeClient, path: str) -> None:
    response = app_client().get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "model 'other' not found; this server serves 'sleep'"}


def test_a_model_named_infer_has_metadata_and_an_infer_route(app_client: MakeClient) -> None:
    # /v2/models/infer is that model's metadata, not an infer call with an empty name.
    client = app_client(model_name="infer")
    assert client.get("/v2/models/infer").json()["name"] == "infer"
    answer = client.post("/v2/models/infer/infer", json={"parameters": {"seconds": 0.01}})
    assert (answer.status_code, answer.json()["model_name"]) == (200, "infer")
    assert app_client().get("/v2/models/infer").status_code == 404


def test_infer_answers_with_outputs_and_timings(app_client: MakeClient) -> None:
    client = app_client()
    response = client.post("/v2/models/sleep/infer", json={"id": "r1", "parameters": {"seconds": 0.01}})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "r1"
    assert body["model_name"] == "sleep"
    assert body["outputs"] == [{"name": "slept_seconds", "shape": [1], "datatype": "FP64", "data": [0.01]}]
    assert body["parameters"]["service_seconds"] >= 0.01
    assert body["parameters"]["queue_seconds"] >= 0


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        (
            {"json": {"parameters": {"seconds": -1}}},
            422,
            "body.parameters.seconds: Input should be greater than",
        ),
        (
            {"json": {"parameters": {"sconds": 1}}},
            422,
            "body.parameters.sconds: Extra inputs are not permitted",
        ),
        ({"json": {"parameters": {"seconds": [1]}}}, 422, "body.parameters.seconds"),
        ({"json": {"inputs": "x"}}, 422, "body.inputs"),
        ({"json": [1, 2]}, 422, "body: "),
        (
            {"content": b"{bad", "headers": {"content-type": "application/json"}},
            422,
            "body: Invalid JSON: key",
        ),
        ({"content": b"\xff{", "headers": {"content-type": "application/json"}}, 422, "body: Invalid JSON"),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 422, "body: Invalid JSON: EOF"),
        ({"content": b"{}"}, 422, "Content-Type: application/json' (got '')"),
        (
            {"content": b"{}", "headers": {"content-type": "text/plain"}},
            422,
            "Content-Type: application/json",
        ),
        ({"json": {"parameters": {}}, "url": "/v2/models/nope/infer"}, 404, "model 'nope' not found"),
    ],
)
def test_malformed_requests_get_a_reason(
    app_client: MakeClient, kwargs: dict[str, object], status: int, error: str
) -> None:
    client = app_client()
    url = str(kwargs.pop("url", "/v2/models/sleep/infer"))
    response = client.post(url, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    assert error in response.json()["error"]


def test_infer_takes_only_post(app_client: MakeClient) -> None:
    response = app_client().get("/v2/models/sleep/infer")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_an_oversized_body_is_413(app_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer, "MAX_BODY_BYTES", 1024)
    response = app_client().post("/v2/models/sleep/infer", json={"id": "x" * 2000})
    assert response.status_code == 413
    assert response.json() == {"error": "body larger than 0 MiB"}


def test_unknown_paths_answer_in_the_error_shape(app_client: MakeClient) -> None:
    response = app_client().get("/v3/nothing")
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})


def test_readiness_follows_the_model_load(app_client: MakeClient) -> None:
    client = app_client(wait_ready=False, load_seconds=0.5)
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reason": "loading model"}
    assert client.get("/v2/health/live").status_code == 200
    early = client.post("/v2/models/sleep/infer", json={})
    assert early.status_code == 503
    assert early.headers["retry-after"] == "1"
    wait_until(lambda: client.get("/v2/health/ready").status_code == 200)
    assert parse_samples(client.get("/metrics").text)['gpuscale_requests_total{outcome="unavailable"}'] == 1


class BrokenModel(SleepModel):
    def load(self) -> None:
        raise OSError("weights not found at /models/sdxl")


def test_a_model_that_fails_to_load_says_why_and_sets_exit_code_2(app_client: MakeClient) -> None:
    settings = ServerSettings()
    app = create_app(settings, BrokenModel(settings))
    exit_requested: list[bool] = []
    app.state.runtime.on_exit_request(lambda: exit_requested.append(True))
    client = app_client(wait_ready=False, app=app)
    wait_until(lambda: exit_requested == [True])
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "model failed to load: weights not found at /models/sdxl"
    assert app.state.runtime.exit_code == EXIT_USAGE


class FailingModel(SleepModel):
    def run(self, job: float) -> object:  # type: ignore[override]
        raise MemoryError("CUDA out of memory")


def test_a_model_error_is_500_with_the_reason_and_the_slot_survives(app_client: MakeClient) -> None:
    settings = ServerSettings()
    client = app_client(app=create_app(settings, FailingModel(settings)))
    for _ in range(2):
        response = client.post("/v2/models/sleep/infer", json={})
        assert response.status_code == 500
        assert response.json() == {"error": "model failed: MemoryError: CUDA out of memory"}
    assert parse_samples(client.get("/metrics").text)['gpuscale_requests_total{outcome="failed"}'] == 2


def test_metrics_text_has_the_load_gauges_and_histograms(app_client: MakeClient) -> None:
    client = app_client(slots=2)
    client.post("/v2/models/sleep/infer", json={"parameters": {"seconds": 0}})
    samples = parse_samples(client.get("/metrics").text)
    assert samples["gpuscale_queue_depth"] == 0
    assert samples["gpuscale_inflight_requests"] == 0
    assert samples["gpuscale_slots"] == 2
    assert samples["gpuscale_ready"] == 1
    assert samples["gpuscale_draining"] == 0
    assert samples['gpuscale_requests_total{outcome="ok"}'] == 1
    for name in (
        "gpuscale_queue_wait_seconds",
        "gpuscale_service_seconds",
        "gpuscale_request_duration_seconds",
    ):
        assert samples[f"{name}_count"] == 1


def test_openapi_documents_the_protocol_paths(app_client: MakeClient) -> None:
    document = app_client(max_request_seconds=60).get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/metrics",
    ):
        assert path in paths
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    assert set(infer["responses"]) >= {"200", "404", "422", "429", "503"}
    # The request schema is the served model's own, bounds from the settings included.
    body_ref = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/SleepInferenceRequest"
    seconds = document["components"]["schemas"]["SleepParameters"]["properties"]["seconds"]
    assert (seconds["minimum"], seconds["maximum"]) == (0, 60)
