"""`gpuscale serve` / `python -m inference_app`: flags generated from ServerSettings, so the flags,
the `GPUSCALE_*` variables and the defaults cannot drift apart."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from inference_app.exit_codes import EXIT_USAGE
from inference_app.models import ModelLoadError, create_model
from inference_app.settings import ServerSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_prefix(settings: type[BaseSettings]) -> str:
    return settings.model_config.get("env_prefix") or ""


def add_settings_arguments(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """One flag per settings field, with its description, environment variable and default."""
    env_prefix = _env_prefix(settings)
    for name, field in settings.model_fields.items():
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        annotation = field.annotation
        if get_origin(annotation) is Literal:
            kwargs["choices"] = get_args(annotation)
        elif annotation in (int, float):
            kwargs["type"] = annotation
            kwargs["metavar"] = "N" if annotation is int else "SECONDS" if "seconds" in name else "X"
        else:
            kwargs["metavar"] = name.split("_")[-1].upper()
        default = "" if field.default is None else f"; default {field.default}"
        kwargs["help"] = f"{field.description} [env {env_prefix}{name.upper()}{default}]"
        parser.add_argument(_flag(name), **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ServerSettings)


def given_settings(args: argparse.Namespace, settings: type[BaseSettings] = ServerSettings) -> dict[str, Any]:
    """The settings set by flags; the rest come from environment variables or defaults."""
    return {
        name: getattr(args, name) for name in settings.model_fields if getattr(args, name, None) is not None
    }


def describe_validation_error(exc: ValidationError, given: set[str], env_prefix: str) -> str:
    """One line naming the flag or environment variable that holds each bad value."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = _flag(field) if field in given or not field else f"{env_prefix}{field.upper()}"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def usage_error(prog: str, message: object) -> int:
    """Say what is wrong in one line on stderr; the exit code for it."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def settings_from_args(args: argparse.Namespace, settings: type[SettingsT], prog: str) -> SettingsT | None:
    """Flags over environment over defaults; None after printing one line per bad value."""
    given = given_settings(args, settings)
    try:
        return settings(**given)
    except ValidationError as exc:
        usage_error(prog, describe_validation_error(exc, set(given), _env_prefix(settings)))
        return None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def run(args: argparse.Namespace, prog: str) -> int:
    from inference_app.server import CannotListen, listen, serve

    settings = settings_from_args(args, ServerSettings, prog)
    if settings is None:
        return EXIT_USAGE
    configure_logging(settings.log_level)
    model = create_model(settings)
    try:
        model.check()
        sock = listen(settings.host, settings.port)
    except (ModelLoadError, CannotListen) as exc:
        return usage_error(prog, exc)
    return serve(settings, sock, model)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = "python -m inference_app") -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Serve one model over the Open Inference Protocol: one request per slot, a bounded "
        "FIFO queue, Prometheus load metrics, and a drain on SIGTERM.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv), parser.prog)
