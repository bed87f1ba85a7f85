"""Status conditions as Kubernetes API conventions want them: upserted by type, with
``lastTransitionTime`` moving only when the status does, and the generation they speak of."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Condition = dict[str, Any]


def upsert(
    conditions: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """``conditions`` with the one of ``type_`` set; the others untouched, order kept (new ones last)."""
    value = "True" if status else "False"
    new: Condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.get("type") == type_:
            found = True
            if c.get("status") == value:
                new["lastTransitionTime"] = c.get("lastTransitionTime", now)
            out.append(new)
        else:
            out.append(dict(c))
    if not found:
        out.append(new)
    return out


def get(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)
