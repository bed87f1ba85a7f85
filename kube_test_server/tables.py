"""Server-side printing (``meta.k8s.io/v1`` Table), so ``kubectl get`` shows a CRD's printer columns."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from kube_test_server.resources import PrinterColumn, ResourceType

_STEP = re.compile(
    r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[["']([^"']+)["']\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]"""
)


def json_path(obj: Any, path: str) -> Any:
    """The subset of kubectl's JSONPath that printer columns use: fields, indexes and ``[?(@.k=="v")]``."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    values = [obj]
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath at {path[pos:]!r}")
        pos = m.end()
        field, index, quoted, key, wanted = m.groups()
        field = field if field is not None else quoted
        nxt = []
        for v in values:
            if field is not None and isinstance(v, dict) and field in v:
                nxt.append(v[field])
            elif index is not None and isinstance(v, list) and int(index) < len(v):
                nxt.append(v[int(index)])
            elif key is not None and isinstance(v, list):
                for item in v:
                    if str(json_path(item, "." + key)) == wanted:
                        nxt.append(item)
        values = nxt
    return values[0] if values else None


def age(timestamp: str | None, now: float) -> str:
    """kubectl's short age: 5s, 3m, 2h, 4d."""
    if not timestamp:
        return "<unknown>"
    seconds = int(now - datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _cell(column: PrinterColumn, obj: dict[str, Any], now: float) -> Any:
    value = json_path(obj, column.json_path)
    if column.type == "date" and isinstance(value, str):
        return age(value, now)
    return value if value is not None else ""


def table(
    rtype: ResourceType, objects: list[dict[str, Any]], now: float, resource_version: str
) -> dict[str, Any]:
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    columns += [
        {"name": c.name, "type": c.type, "format": "", "description": c.description, "priority": c.priority}
        for c in rtype.printer_columns
    ]
    has_age = any(c.json_path == ".metadata.creationTimestamp" for c in rtype.printer_columns)
    if not has_age:
        columns.append({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0})
    rows = []
    for obj in objects:
        m = obj.get("metadata") or {}
        cells = [m.get("name", "")] + [_cell(c, obj, now) for c in rtype.printer_columns]
        if not has_age:
            cells.append(age(m.get("creationTimestamp"), now))
        rows.append(
            {
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m},
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
