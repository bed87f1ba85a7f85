"""Models served by the pod server, chosen by `--model`."""

from __future__ import annotations

from typing import Any

from inference_app.models.base import Model, ModelLoadError, ModelOutput
from inference_app.models.matmul import MatmulModel
from inference_app.models.sleep import SleepModel
from inference_app.settings import ServerSettings

MODELS: dict[str, type[Model[Any]]] = {SleepModel.kind: SleepModel, MatmulModel.kind: MatmulModel}


def create_model(settings: ServerSettings) -> Model[Any]:
    # settings.model is validated against ModelKind, the same names as MODELS' keys.
    return MODELS[settings.model](settings)


__all__ = ["MODELS", "Model", "ModelLoadError", "ModelOutput", "create_model"]
