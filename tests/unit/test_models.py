"""Models: parameter validation, checksums, and errors that say what to fix."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest
from pydantic import ValidationError

from inference_app.models import MODELS, Model, ModelLoadError, create_model
from inference_app.models.matmul import MatmulJob, MatmulModel, reference_checksum
from inference_app.models.sleep import SleepModel
from inference_app.settings import ServerSettings

HAS_TORCH = importlib.util.find_spec("torch") is not None


def job(model: Model[Any], body: dict[str, Any]) -> Any:
    """What the app does with a body: validate it against the model's request schema, make the job."""
    return model.job_for(model.request_model.model_validate(body))


def refusal(model: Model[Any], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        job(model, body)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in refused.value.errors())


def test_registry_holds_both_models() -> None:
    assert set(MODELS) == {"sleep", "matmul"}
    assert isinstance(create_model(ServerSettings(model="sleep")), SleepModel)
    assert isinstance(create_model(ServerSettings(model="matmul")), MatmulModel)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 1.0),
        ({"parameters": {}}, 1.0),
        ({"parameters": {"seconds": 0}}, 0.0),
        ({"parameters": {"seconds": 2.5}}, 2.5),
        ({"parameters": {"seconds": 10}}, 10.0),
        ({"id": "x", "inputs": [], "parameters": {"seconds": 3}}, 3.0),
    ],
)
def test_sleep_takes_seconds(body: dict[str, Any], expected: float) -> None:
    assert job(SleepModel(ServerSettings(max_request_seconds=10)), body) == expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"seconds": -1}, "parameters.seconds: Input should be greater than or equal to 0"),
        ({"seconds": 10.5}, "parameters.seconds: Input should be less than or equal to 10"),
        ({"seconds": "1"}, "parameters.seconds: Input should be a valid number"),
        ({"seconds": True}, "parameters.seconds: Input should be a valid number"),
        ({"seconds": math.inf}, "parameters.seconds: Input should be a finite number"),
        ({"seconds": math.nan}, "parameters.seconds: Input should be a finite number"),
        ({"second": 1}, "parameters.second: Extra inputs are not permitted"),
    ],
)
def test_sleep_refuses_bad_parameters(parameters: dict[str, Any], message: str) -> None:
    assert refusal(SleepModel(ServerSettings(max_request_seconds=10)), {"parameters": parameters}) == message


def test_input_tensors_are_refused_with_the_way_to_pass_arguments() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    assert "takes no input tensors; pass its arguments as parameters (seconds)" in refusal(
        SleepModel(ServerSettings()), body
    )


def test_request_schema_documents_the_parameters_and_their_bounds() -> None:
    schema = SleepModel(
        ServerSettings(max_request_seconds=30, sleep_seconds=2)
    ).request_model.model_json_schema()
    seconds = schema["$defs"]["SleepParameters"]["properties"]["seconds"]
    assert (seconds["minimum"], seconds["maximum"], seconds["default"]) == (0, 30, 2)
    assert schema["properties"]["inputs"]["maxItems"] == 0


def test_sleep_run_reports_what_it_slept() -> None:
    output = SleepModel(ServerSettings()).run(0.0)
    assert output.outputs[0].name == "slept_seconds"
    assert output.outputs[0].data == [0.0]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, MatmulJob(256, 4, 0)),
        ({"size": 32, "iterations": 2, "seed": 7}, MatmulJob(32, 2, 7)),
        ({"size": 32.0}, MatmulJob(32, 4, 0)),
    ],
)
def test_matmul_parameters(parameters: dict[str, Any], expected: MatmulJob) -> None:
    assert job(MatmulModel(ServerSettings(model="matmul")), {"parameters": parameters}) == expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"size": 0}, "parameters.size: Input should be greater than or equal to 1"),
        ({"size": 9000}, "parameters.size: Input should be less than or equal to 8192"),
        ({"size": 2.5}, "parameters.size: Input should be a valid integer"),
        ({"size": 32.5}, "parameters.size: Input should be a valid integer"),
        ({"size": True}, "parameters.size: Input should be a valid integer"),
        ({"iterations": 0}, "parameters.iterations: Input should be greater than or equal to 1"),
        ({"seed": -1}, "parameters.seed: Input should be greater than or equal to 0"),
        ({"size": "big"}, "parameters.size: Input should be a valid integer"),
    ],
)
def test_matmul_refuses_bad_parameters(parameters: dict[str, Any], message: str) -> None:
    assert refusal(MatmulModel(ServerSettings(model="matmul")), {"parameters": parameters}) == message


def test_matmul_on_numpy_matches_the_float64_reference() -> None:
    model = MatmulModel(ServerSettings(model="matmul", matmul_backend="numpy"))
    model.check()
    model.load()
    model.warmup()
    assert model.expected_seconds() > 0
    for job in (MatmulJob(48, 3, 0), MatmulJob(100, 5, 12345)):
        output = model.run(job)
        assert output.parameters["backend"] == "numpy"
        assert output.outputs[0].data[0] == pytest.approx(
            reference_checksum(job.size, job.iterations, job.seed), rel=1e-4
        )


def test_checksum_depends_on_the_job() -> None:
    assert reference_checksum(32, 2, 0) != pytest.approx(reference_checksum(32, 2, 1), rel=1e-6)
    assert reference_checksum(32, 2, 0) != pytest.approx(reference_checksum(33, 2, 0), rel=1e-6)


@pytest.mark.skipif(
    not HAS_TORCH, reason="torch is not installed (it is an optional extra: pip install torch)"
)
def test_matmul_on_torch_matches_the_float64_reference() -> None:
    model = MatmulModel(ServerSettings(model="matmul", matmul_backend="torch"))
    model.check()
    model.load()
    model.warmup()
    output = model.run(MatmulJob(64, 3, 5))
    assert output.parameters["backend"] == "torch"
    assert output.outputs[0].data[0] == pytest.approx(reference_checksum(64, 3, 5), rel=1e-3)


@pytest.mark.skipif(HAS_TORCH, reason="checks the message for a machine without torch")
def test_forcing_torch_without_torch_says_how_to_fix_it() -> None:
    with pytest.raises(ModelLoadError, match="torch is not installed"):
        MatmulModel(ServerSettings(model="matmul", matmul_backend="torch")).check()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"matmul_backend": "numpy", "matmul_device": "cuda"}, "needs torch"),
        ({"matmul_size": 100, "matmul_max_size": 50}, "above --matmul-max-size"),
        ({"matmul_iterations": 100, "matmul_max_iterations": 50}, "above --matmul-max-iterations"),
    ],
)
def test_matmul_settings_that_cannot_work(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        MatmulModel(ServerSettings(model="matmul", **settings)).check()
