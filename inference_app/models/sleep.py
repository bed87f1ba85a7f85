"""The sleep model: holds its slot for a given time. It stands in for a GPU job where there is no GPU."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from inference_app.models.base import Model, ModelLoadError, ModelOutput, parameters_model
from inference_app.protocol import ResponseOutput, TensorMetadata


class SleepModel(Model[float]):
    kind = "sleep"
    platform = "gpuscale_sleep"

    def build_parameters_model(self) -> type[BaseModel]:
        s = self.settings
        seconds = Field(
            s.sleep_seconds,
            ge=0,
            le=s.max_request_seconds,
            allow_inf_nan=False,
            description="how long the request holds its slot",
        )
        return parameters_model("SleepParameters", seconds=(float, seconds))

    def check(self) -> None:
        s = self.settings
        if s.sleep_seconds > s.max_request_seconds:
            limit = f"--max-request-seconds {s.max_request_seconds:g}"
            raise ModelLoadError(f"--sleep-seconds {s.sleep_seconds:g} is above {limit}")

    def load(self) -> None:
        time.sleep(self.settings.load_seconds)

    def prepare(self, parameters: Any) -> float:
        return float(parameters.seconds)

    def run(self, job: float) -> ModelOutput:
        if job > 0:
            time.sleep(job)
        return ModelOutput([ResponseOutput(name="slept_seconds", shape=[1], datatype="FP64", data=[job])])

    def expected_seconds(self) -> float:
        return self.settings.sleep_seconds

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [TensorMetadata(name="slept_seconds", datatype="FP64", shape=[1])]

    @property
    def description(self) -> str:
        return f"sleep ({self.settings.sleep_seconds:g} s per request by default)"
