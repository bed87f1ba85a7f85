"""The one small interface every model implements.

A model declares its request parameters as a pydantic model (bounds from the settings): the infer
endpoint validates bodies with it, the OpenAPI document at /docs shows it, and a bad value is a 422
with its reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from inference_app.protocol import InferenceRequest, Parameters, RequestInput, ResponseOutput, TensorMetadata
from inference_app.settings import ServerSettings

JobT = TypeVar("JobT")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded with these settings: the CLI prints it and exits 2."""


@dataclass(frozen=True)
class ModelOutput:
    outputs: list[ResponseOutput]
    parameters: Parameters = field(default_factory=dict)


def _whole_number(value: Any) -> Any:
    # JSON Schema's "integer" includes 1.0; strict pydantic would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_whole_number)]
"""An integer parameter: 3 and 3.0 pass; 3.5, "3" and true do not."""


def parameters_model(name: str, **fields: Any) -> type[BaseModel]:
    """A request-parameters model: JSON types only (no "1" for 1), unknown names refused."""
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(name, __config__=config, **fields)


class Model(ABC, Generic[JobT]):
    """A model behind the slot queue.

    `prepare` runs on the event loop and must be quick. `check` runs in the CLI before serving and
    again before `load`; `load`, `warmup` and `run` block and run in threads of their own.
    """

    kind: ClassVar[str]
    platform: ClassVar[str]

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.parameters_model = self.build_parameters_model()
        self.request_model = self._build_request_model()

    @abstractmethod
    def build_parameters_model(self) -> type[BaseModel]: ...

    def check(self) -> None:
        """Fail fast, before the server starts, on settings that can never load."""

    @abstractmethod
    def load(self) -> None: ...

    def warmup(self) -> None:
        """Run once after load so the first request does not pay for lazy initialisation."""

    @abstractmethod
    def prepare(self, parameters: Any) -> JobT:
        """Turn validated parameters (an instance of `parameters_model`) into a job."""

    @abstractmethod
    def run(self, job: JobT) -> ModelOutput: ...

    @abstractmethod
    def expected_seconds(self) -> float:
        """A prior for the service time, used before any request has been measured."""

    @property
    @abstractmethod
    def outputs(self) -> list[TensorMetadata]: ...

    @property
    def inputs(self) -> list[TensorMetadata]:
        return []

    @property
    def description(self) -> str:
        """One line for the startup log: what runs, where."""
        return self.kind

    def job_for(self, request: InferenceRequest) -> JobT:
        return self.prepare(request.parameters or self.parameters_model())

    def _build_request_model(self) -> type[InferenceRequest]:
        names = ", ".join(self.parameters_model.model_fields)
        reason = (
            f"model kind {self.kind!r} takes no input tensors; pass its arguments as parameters ({names})"
        )

        def no_inputs(inputs: list[RequestInput]) -> list[RequestInput]:
            if inputs:
                raise ValueError(reason)
            return inputs

        inputs_type = Annotated[
            list[RequestInput],
            AfterValidator(no_inputs),
            Field(default_factory=list, description=reason, json_schema_extra={"maxItems": 0}),
        ]
        parameters_type: Any = self.parameters_model | None
        model: type[InferenceRequest] = create_model(
            f"{self.kind.capitalize()}InferenceRequest",
            __base__=InferenceRequest,
            parameters=(parameters_type, None),
            inputs=(inputs_type, ...),
        )
        return model
