"""The matmul model: real tensor work, on torch (CUDA when present, else CPU) or numpy.

Each job multiplies a deterministic `size` x `size` matrix into itself `iterations` times,
normalising after each step, and returns the sum of the result as a checksum. `reference_checksum`
computes the same in float64, so a client can verify any answer.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from inference_app.models.base import JsonInt, Model, ModelLoadError, ModelOutput, parameters_model
from inference_app.protocol import ResponseOutput, TensorMetadata
from inference_app.settings import ServerSettings

MAX_SEED = 2**31 - 1
WARMUP_SIZE = 64


@dataclass(frozen=True)
class MatmulJob:
    size: int
    iterations: int
    seed: int


def _entries(i: Any, j: Any, seed: int) -> Any:
    # Integer arithmetic first, so numpy and torch build bit-identical matrices.
    return ((i * 7 + j * 13 + seed) % 17 + 1) / 17.0


def _power(a: Any, iterations: int, norm: Callable[[Any], Any]) -> Any:
    # The same steps on numpy arrays and torch tensors.
    x = a
    for _ in range(iterations):
        x = a @ x
        x /= norm(x)
    return x


def _numpy_checksum(size: int, iterations: int, seed: int, dtype: type[np.floating[Any]]) -> float:
    idx = np.arange(size, dtype=np.int64)
    a = _entries(idx[:, None], idx[None, :], seed).astype(dtype)
    return float(_power(a, iterations, np.linalg.norm).sum(dtype=np.float64))


def reference_checksum(size: int, iterations: int, seed: int = 0) -> float:
    """The checksum a correct run returns, computed in float64 with numpy."""
    return _numpy_checksum(size, iterations, seed, np.float64)


class MatmulModel(Model[MatmulJob]):
    kind = "matmul"
    platform = "gpuscale_matmul"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self.backend = "numpy"
        self.device = "cpu"
        self._torch: Any = None
        self._expected = 0.1

    def check(self) -> None:
        settings = self.settings
        torch_installed = importlib.util.find_spec("torch") is not None
        if settings.matmul_backend == "torch" and not torch_installed:
            raise ModelLoadError(
                "--matmul-backend torch, but torch is not installed (pip install torch, a CPU or CUDA build)"
            )
        self.backend = "torch" if settings.matmul_backend != "numpy" and torch_installed else "numpy"
        if self.backend == "numpy" and settings.matmul_device == "cuda":
            raise ModelLoadError("--matmul-device cuda needs torch, and the numpy backend is in use")
        if settings.matmul_size > settings.matmul_max_size:
            raise ModelLoadError(
                f"--matmul-size {settings.matmul_size} is above --matmul-max-size {settings.matmul_max_size}"
            )
        if settings.matmul_iterations > settings.matmul_max_iterations:
            raise ModelLoadError(
                f"--matmul-iterations {settings.matmul_iterations} is above "
                f"--matmul-max-iterations {settings.matmul_max_iterations}"
            )

    def load(self) -> None:
        if self.backend != "torch":
            return
        import torch

        cuda = torch.cuda.is_available()
        if self.settings.matmul_device == "cuda" and not cuda:
            raise ModelLoadError("--matmul-device cuda, but torch sees no CUDA device")
        self.device = "cuda" if cuda and self.settings.matmul_device != "cpu" else "cpu"
        self._torch = torch

    def warmup(self) -> None:
        # Initialises BLAS (or the CUDA context and kernels), then times the default job as the prior.
        self.run(MatmulJob(WARMUP_SIZE, 2, 0))
        default = MatmulJob(self.settings.matmul_size, self.settings.matmul_iterations, 0)
        started = time.perf_counter()
        self.run(default)
        self._expected = time.perf_counter() - started

    def _torch_job(self, job: MatmulJob) -> float:
        torch = self._torch
        with torch.inference_mode():
            idx = torch.arange(job.size, dtype=torch.int64, device=self.device)
            a = _entries(idx[:, None], idx[None, :], job.seed).to(torch.float32)
            x = _power(a, job.iterations, torch.linalg.norm)
            # .item() waits for the device, so the slot is held exactly as long as the GPU works.
            return float(x.sum(dtype=torch.float64).item())

    def build_parameters_model(self) -> type[BaseModel]:
        s = self.settings
        return parameters_model(
            "MatmulParameters",
            size=(JsonInt, Field(s.matmul_size, ge=1, le=s.matmul_max_size, description="matrix size")),
            iterations=(
                JsonInt,
                Field(s.matmul_iterations, ge=1, le=s.matmul_max_iterations, description="multiplications"),
            ),
            seed=(JsonInt, Field(0, ge=0, le=MAX_SEED, description="varies the matrix")),
        )

    def prepare(self, parameters: Any) -> MatmulJob:
        return MatmulJob(parameters.size, parameters.iterations, parameters.seed)

    def run(self, job: MatmulJob) -> ModelOutput:
        if self.backend == "torch":
            checksum = self._torch_job(job)
        else:
            checksum = _numpy_checksum(job.size, job.iterations, job.seed, np.float32)
        return ModelOutput(
            [ResponseOutput(name="checksum", shape=[1], datatype="FP64", data=[checksum])],
            {"backend": self.backend, "device": self.device, "size": job.size, "iterations": job.iterations},
        )

    def expected_seconds(self) -> float:
        return self._expected

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [TensorMetadata(name="checksum", datatype="FP64", shape=[1])]

    @property
    def description(self) -> str:
        s = self.settings
        default_job = f"{s.matmul_size}x{s.matmul_size}, {s.matmul_iterations} iterations"
        return f"matmul on {self.backend}/{self.device} ({default_job} by default)"
