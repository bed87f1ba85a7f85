"""What to send so an existing object matches what the operator builds, and nothing when it already does.

The API server adds defaults (probe timings, clusterIP, imagePullPolicy...) to what the operator
sends, so comparing whole objects would see a difference on every round and write forever. Only the
fields the operator sets are compared: a desired value matches when every key it names is equal in
the live object, recursively; lists must have the same length and match item by item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The top-level sections an owned object's desired state lives in (the rest is the server's).
SECTIONS = ("spec", "rules", "subjects", "roleRef", "data")
METADATA = ("labels", "annotations", "ownerReferences")


def covers(live: Any, desired: Any) -> bool:
    """True when ``live`` already holds everything ``desired`` says."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and covers(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool((live == desired and type(live) is type(desired)) or _same_number(live, desired))


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ) and a == b


def drift_patch(
    live: Mapping[str, Any], desired: Mapping[str, Any], ignore: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A merge patch that brings ``live`` to ``desired`` in the owned sections, or {} when nothing drifted.

    ``ignore`` names dotted paths left to others (``spec.replicas``: the autoscaler's). A drifted section
    is sent whole: merge patch replaces lists, so containers and env come back exactly as built, and
    keys the server defaulted stay because merge patch keeps what it is not told about.
    """
    patch: dict[str, Any] = {}
    for section in SECTIONS:
        if section not in desired:
            continue
        want = _without(desired[section], [p.split(".", 1)[1] for p in ignore if p.startswith(section + ".")])
        if not covers(live.get(section), want):
            patch[section] = want
    meta_patch = {
        k: desired["metadata"][k]
        for k in METADATA
        if k in desired.get("metadata", {})
        and not covers(live.get("metadata", {}).get(k), desired["metadata"][k])
    }
    if meta_patch:
        patch["metadata"] = meta_patch
    return patch


def _without(value: Any, paths: list[str]) -> Any:
    if not paths or not isinstance(value, Mapping):
        return value
    out = dict(value)
    for p in paths:
        head, _, rest = p.partition(".")
        if head in out and rest:
            out[head] = _without(out[head], [rest])
        elif head in out:
            del out[head]
    return out
