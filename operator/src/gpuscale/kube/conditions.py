"""Status conditions as Kubernetes API conventions want them: upserted by type, with
``lastTransitionTime`` moving only when the status does, and the generation they speak of."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def status_essence(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a status write is for: everything but the policy's samples and the transition times. Samples
    change every tick; they ride along with the next write for anything else. A restarted operator
    that finds them old does no harm: missing samples never scale down, and the times that guard
    against a flap (last scale-up, below since, last busy) are written whenever they move."""
    out = {k: v for k, v in status.items() if k not in ("conditions", "autoscalerState")}
    state = status.get("autoscalerState")
    if state is not None:
        out["autoscalerState"] = {k: v for k, v in state.items() if k != "samples"}
    # By type: the order of the list says nothing.
    out["conditions"] = {
        c["type"]: {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or ()
    }
    return out
