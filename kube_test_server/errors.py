"""API errors as the real server shapes them: a ``Status`` object with reason, details and causes."""

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
        qualified = f"{resource}.{group}" if group else resource
        details = {"name": name, "kind": resource, **({"group": group} if group else {})}
        return cls(404, "NotFound", f'{qualified} "{name}" not found', details)

    @classmethod
    def already_exists(cls, resource: str, name: str, group: str = "") -> ApiError:
        qualified = f"{resource}.{group}" if group else resource
        details = {"name": name, "kind": resource, **({"group": group} if group else {})}
        return cls(409, "AlreadyExists", f'{qualified} "{name}" already exists', details)

    @classmethod
    def conflict(cls, resource: str, name: str, why: str, group: str = "") -> ApiError:
        qualified = f"{resource}.{group}" if group else resource
        details = {"name": name, "kind": resource, **({"group": group} if group else {})}
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
        qualified = f"{kind}.{group}" if group else kind
        listed = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
        joined = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
        details = {
            "name": name,
            "kind": kind,
            **({"group": group} if group else {}),
            "causes": [c.to_dict() for c in causes],
        }
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

    @classmethod
    def internal(cls, message: str) -> ApiError:
        return cls(500, "InternalError", message)
