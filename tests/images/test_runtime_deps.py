"""The images install `gpuscale` with its runtime dependencies only (no test or plot extras). Their three
commands are started here the same way: in a Python where every installed package outside the runtime
dependencies' closure fails to import, so a module-level `import matplotlib` (or pytest, kubernetes,
...) on the path of `gpuscale serve`, `gateway` or `operator` fails here rather than in a pod."""

from __future__ import annotations

import re
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import httpx
import pytest
from gpuscale.podproc import ServerProcess
from packaging.requirements import Requirement

# The distribution's own packages (an editable install maps them to the repository).
OWN = {"gpuscale", "gpuscale_gateway", "inference_app", "kube_test_server"}

SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
{body}
"""
MAIN = "from gpuscale.cli import main\nsys.exit(main(sys.argv[1:]))"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(distribution: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """The distributions `distribution` (with these extras) pulls in, itself included."""
    seen: set[str] = set()
    todo = [(distribution, extras)]
    while todo:
        name, wanted = todo.pop()
        key = normalize(name)
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:
            continue  # a dependency for another platform or Python
        seen.add(key)
        for text in requirements:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker is not None and not any(
                requirement.marker.evaluate(e) for e in environments
            ):
                continue
            if normalize(requirement.name) not in seen or requirement.extras:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


@cache
def blocked_modules() -> list[str]:
    """Top-level modules of installed distributions that the image would not have."""
    runtime = closure("gpuscale")
    blocked = []
    for module, distributions in packages_distributions().items():
        if module in OWN or module.startswith("_"):
            continue
        if not any(normalize(d) in runtime for d in distributions):
            blocked.append(module)
    return sorted(blocked)


def script(body: str) -> str:
    return SCRIPT.format(blocked=blocked_modules(), body=body)


def image_env(tmp_path: Path) -> dict[str, str]:
    return {"PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path)}


def test_the_runtime_closure_is_what_the_images_install() -> None:
    runtime = closure("gpuscale")
    for name in ("fastapi", "uvicorn", "uvloop", "httptools", "kopf", "aiohttp", "numpy", "simpy"):
        assert name in runtime, name  # uvicorn[standard]'s extras and kopf's own dependencies included
    blocked = blocked_modules()
    for module in ("pytest", "matplotlib", "hypothesis", "kubernetes", "mypy"):
        assert module in blocked, module


def test_the_blocking_works(tmp_path: Path) -> None:
    proc = ServerProcess([sys.executable, "-c", script("import matplotlib")], env=image_env(tmp_path))
    assert proc.wait(30) != 0
    assert any("ImportError" in line or "ModuleNotFoundError" in line for line in proc.output), proc.output


@pytest.mark.parametrize("command", ["serve", "gateway", "operator", "load", "local", "crd"])
def test_commands_load_with_runtime_dependencies_only(command: str, tmp_path: Path) -> None:
    proc = ServerProcess([sys.executable, "-c", script(MAIN), command, "--help"], env=image_env(tmp_path))
    assert proc.wait(60) == 0, "\n".join(proc.output)


def test_operator_run_path_imports_with_runtime_dependencies_only(tmp_path: Path) -> None:
    """`gpuscale operator` imports kopf and the handlers only once it runs."""
    body = "import kopf\nimport gpuscale.kube.handlers\nprint('imported')"
    proc = ServerProcess([sys.executable, "-c", script(body)], env=image_env(tmp_path))
    assert proc.wait(60) == 0, "\n".join(proc.output)


def test_pod_server_and_gateway_serve_with_runtime_dependencies_only(tmp_path: Path) -> None:
    """`gpuscale serve` (the inference image's command) behind `gpuscale gateway` (the operator image's),
    answering a request, then draining on SIGTERM with exit code 0."""
    env = image_env(tmp_path) | {"GPUSCALE_SLEEP_SECONDS": "0.05"}
    serve = [sys.executable, "-c", script(MAIN), "serve", "--port", "0"]
    with ServerProcess(serve, env=env) as pod:
        pod.wait_ready()
        gateway_cmd = [
            sys.executable,
            "-c",
            script(MAIN),
            "gateway",
            "--port=0",
            "--admin-port=0",
            f"--replicas=pod={pod.url}",
        ]
        with ServerProcess(gateway_cmd, env=env) as gateway:
            url = gateway.wait_listening()
            answer = httpx.post(
                f"{url}/v2/models/sleep/infer", json={"parameters": {"seconds": 0.05}}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["gpuscale-replica"] == "pod"
            assert gateway.stop() == 0, "\n".join(gateway.output)
        assert pod.stop() == 0, "\n".join(pod.output)
