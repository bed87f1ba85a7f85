"""Open Inference Protocol (KServe v2) REST bodies, as pydantic models.

Reference: https://github.com/kserve/open-inference-protocol (REST section). Only the JSON tensor
encoding is supported; the binary extension is not.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

ParameterValue = bool | int | float | str
Parameters = dict[str, ParameterValue]


class Tensor(BaseModel):
    """The protocol's $request_input and $response_output: one shape for both."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any]


RequestInput = Tensor
ResponseOutput = Tensor


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    # The protocol lists `inputs` as required; our models take their arguments as parameters, so
    # an empty or missing list is accepted.
    inputs: list[RequestInput] = Field(default_factory=list)
    outputs: list[RequestOutput] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = None


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool
    reason: str | None = None


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool
    reason: str | None = None


class ErrorResponse(BaseModel):
    error: str


class ValidationErrorResponse(BaseModel):
    error: str = Field(description="one line: each bad field and what is wrong with it")
    detail: list[dict[str, Any]] = Field(description="pydantic's errors, located from 'body'")
