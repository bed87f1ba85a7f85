"""`gpuscale serve` and `python -m inference_app` from the outside: one-line errors, exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import GPUSCALE, StartPod


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}, check=False
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--slots", "0"], {}, "gpuscale serve: error: --slots: Input should be greater than or equal to 1"),
        (["--model", "bert"], {}, "invalid choice: 'bert'"),
        (["--slots", "x"], {}, "argument --slots: invalid int value: 'x'"),
        ([], {"GPUSCALE_MAX_QUEUE": "-1"}, "GPUSCALE_MAX_QUEUE: Input should be greater than or equal to 0"),
        ([], {"GPUSCALE_MODEL": "bert"}, "GPUSCALE_MODEL: Input should be 'sleep' or 'matmul'"),
        (["--model", "matmul", "--matmul-backend", "numpy", "--matmul-device", "cuda"], {}, "needs torch"),
        (["--model-name", "a/b"], {}, "--model-name: String should match pattern"),
        (["--sleep-seconds", "10", "--max-request-seconds", "5"], {}, "above --max-request-seconds 5"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = run(GPUSCALE, "serve", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run(sys.executable, "-m", "inference_app", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_environment_variables_configure_the_server(start_pod: StartPod) -> None:
    import httpx

    pod = start_pod(env={"GPUSCALE_SLOTS": "3", "GPUSCALE_MODEL_NAME": "sdxl"})
    assert httpx.get(f"{pod.url}/v2/models/sdxl").json()["parameters"]["slots"] == 3


def test_version() -> None:
    result = run(GPUSCALE, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("gpuscale ")


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    plot = tmp_path / "demo.png"
    root = Path(__file__).resolve().parents[2]
    demo = ["demo", "--clients", "3", "--burst-seconds", "3", "--tail-seconds", "1", "--plot", str(plot)]
    result = subprocess.run(
        [GPUSCALE, *demo], capture_output=True, text=True, timeout=120, cwd=root, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up: 2 waiting and no replica idle" in result.stdout
    assert "failed 0" in result.stdout
    assert f"Plot of replicas, queue and latency over time: {plot}" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
