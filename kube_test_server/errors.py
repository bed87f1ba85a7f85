"""API errors as the real server shapes them: a ``Status`` object with reason, details and causes, and
values quoted in messages as Go quotes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One problem in a request, as in ``details.causes`` of a 422 ``Invalid`` Status."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    """An error answered as a ``Status`` body with HTTP ``code``."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    # The constructors below copy the real server's wording (k8s.io/apimachinery/pkg/api/errors).

    @classmethod
    def not_found(cls, resource: str, name: str, group: str = "") -> ApiError:
        qualified, details = _subject(resource, name, group)
        return cls(404, "NotFound", f'{qualified} "{name}" not found', details)

    @classmethod
    def no_such_path(cls) -> ApiError:
        """404 for a path that names no served resource (or a subresource the kind does not have)."""
        return cls(404, "NotFound", "the server could not find the requested resource")

    @classmethod
    def already_exists(cls, resource: str, name: str, group: str = "") -> ApiError:
        qualified, details = _subject(resource, name, group)
        return cls(409, "AlreadyExists", f'{qualified} "{name}" already exists', details)

    @classmethod
    def conflict(cls, resource: str, name: str, why: str, group: str = "") -> ApiError:
        qualified, details = _subject(resource, name, group)
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": {why}', details)

    @classmethod
    def stale(cls, resource: str, name: str, group: str = "") -> ApiError:
        return cls.conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
            group,
        )

    @classmethod
    def invalid(cls, kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
        qualified, details = _subject(kind, name, group)
        listed = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
        joined = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
        details["causes"] = [c.to_dict() for c in causes]
        return cls(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def unsupported_media_type(cls, content_type: str) -> ApiError:
        return cls(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - "
            f"accepted media types include: application/json-patch+json, "
            f"application/merge-patch+json, application/apply-patch+yaml; got {content_type}",
        )

    @classmethod
    def method_not_allowed(cls, message: str) -> ApiError:
        return cls(405, "MethodNotAllowed", message)

    @classmethod
    def gone(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)


def _subject(resource: str, name: str, group: str) -> tuple[str, dict[str, Any]]:
    """What an error is about: ``deployments.apps`` as its message names it, and its ``details``."""
    qualified = f"{resource}.{group}" if group else resource
    details: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return qualified, details


_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (``%q``): how the real server's messages quote values, byte for byte."""
    out: list[str] = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
