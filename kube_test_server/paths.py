"""Reading and writing an object's field by a simple JSON path such as ``.spec.replicas``."""

from __future__ import annotations

from typing import Any


def _parts(path: str) -> list[str]:
    if not path.startswith("."):
        raise ValueError(f"a JSON path starts with '.': {path!r}")
    return [p for p in path[1:].split(".") if p]


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    for part in _parts(path):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = _parts(path)
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value
