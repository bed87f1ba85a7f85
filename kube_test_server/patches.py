"""The API server's PATCH formats (JSON merge, JSON patch, strategic merge) as pure functions on JSON data.

Inputs are never mutated: every function works on a deep copy and returns fresh data.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from kube_test_server.errors import ApiError

__all__ = ["PatchKind", "json_patch", "merge_patch", "patch_kind", "strategic_merge_patch"]

PatchKind = Literal["merge", "json", "strategic", "apply"]

_MEDIA_TYPES: Final[dict[str, PatchKind]] = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def patch_kind(content_type: str) -> PatchKind:
    """The patch format a PATCH request's ``Content-Type`` names; 415 for any other media type."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        return _MEDIA_TYPES[media]
    except KeyError:
        raise ApiError.unsupported_media_type(content_type) from None


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but, unlike Python's ``==``, ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b


# --- RFC 7386 JSON merge patch ------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the RFC 7386 merge ``patch`` applied: ``null`` deletes, lists are replaced whole."""
    return _merge_into(copy.deepcopy(target), patch)


def _merge_into(owned: Any, patch: Any) -> Any:
    # `owned` is already a private copy, so it may be changed in place; `patch` is never changed.
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = owned if isinstance(owned, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_into(result.get(key), value)
    return result


# --- RFC 6902 JSON patch ------------------------------------------------------------------------

_ESCAPE_ERROR: Final = re.compile(r"~(?![01])")
_ARRAY_INDEX: Final = re.compile(r"0|[1-9][0-9]*")
_MISSING: Final = object()


class _PatchFailed(Exception):
    """An operation that cannot be applied; becomes a 422 naming the operation."""


def _unprocessable(detail: str) -> ApiError:
    # The real server answers a failed application with a generic 422 and puts the JSON patch
    # library's message in an UnexpectedServerResponse cause; the message repeats it here so a
    # failing test says which path went wrong without digging into details.
    return ApiError(
        422,
        "Invalid",
        f"the server rejected our request due to an error in our request: {detail}",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]},
    )


def json_patch(target: Any, operations: Any) -> Any:
    """``target`` with the RFC 6902 ``operations`` applied in order, all or nothing.

    A body that is not a list of objects is a 400; an operation that cannot be applied (unknown op,
    bad pointer, missing path, index out of range, failed ``test``) is a 422 ``Invalid``.
    """
    if not isinstance(operations, list):
        raise ApiError.bad_request(
            f"json: cannot unmarshal {_json_type(operations)} into Go value of type jsonpatch.Patch"
        )
    for operation in operations:
        if not isinstance(operation, dict):
            raise ApiError.bad_request(
                f"json: cannot unmarshal {_json_type(operation)} into Go value of type jsonpatch.Operation"
            )
    document = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        try:
            document = _apply_operation(document, operation)
        except _PatchFailed as failure:
            raise _unprocessable(f"{failure} (operation {number})") from None
    return document


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op = operation.get("op")
    path = _pointer(operation, "path")
    if op == "add":
        return _add(document, path, _value(operation, "add"), operation["path"])
    if op == "remove":
        _take(document, path, operation["path"], "remove")
        return document
    if op == "replace":
        value = _value(operation, "replace")
        if not path:
            return value
        container, key = _parent(document, path, operation["path"], "replace")
        container[_existing(container, key, operation["path"], "replace")] = value
        return document
    if op == "move":
        source = _pointer(operation, "from")
        if source == path:
            return document
        if path[: len(source)] == source:
            raise _PatchFailed(
                f"move operation cannot move {operation['from']} into its own child {operation['path']}"
            )
        value = _take(document, source, operation["from"], "move")
        return _add(document, path, value, operation["path"])
    if op == "copy":
        source = _pointer(operation, "from")
        value = copy.deepcopy(_get(document, source, operation["from"], "copy"))
        return _add(document, path, value, operation["path"])
    if op == "test":
        expected = _value(operation, "test")
        actual = _lookup(document, path)
        # evanphx/json-patch, which the API server uses, lets `null` match a missing member.
        if (actual is _MISSING and expected is None) or _json_equal(actual, expected):
            return document
        raise _PatchFailed(f"testing value {operation['path']} failed: test failed")
    raise _PatchFailed(f"unexpected op {op!r}: must be one of add, remove, replace, move, copy, test")


def _value(operation: dict[str, Any], op: str) -> Any:
    if "value" not in operation:
        raise _PatchFailed(f"{op} operation at {operation['path']} is missing its value")
    return copy.deepcopy(operation["value"])


def _pointer(operation: dict[str, Any], member: str) -> list[str]:
    if member not in operation:
        raise _PatchFailed(f"operation {operation.get('op')!r} is missing its {member!r} field")
    pointer = operation[member]
    if not isinstance(pointer, str):
        raise _PatchFailed(f"{member} {pointer!r} is not a JSON pointer string")
    if pointer == "":
        return []
    if not pointer.startswith("/") or _ESCAPE_ERROR.search(pointer):
        raise _PatchFailed(f"{member} {pointer!r} is not a valid JSON pointer")
    # ~1 before ~0, so that "~01" reads as the literal "~1" (RFC 6901 section 4).
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def _index(token: str, length: int, pointer: str, op: str, *, end_allowed: bool) -> int:
    if end_allowed and token == "-":
        return length
    if not _ARRAY_INDEX.fullmatch(token):
        raise _PatchFailed(f"{op} operation does not apply: {token!r} in {pointer} is not an array index")
    index = int(token)
    if index > length or (index == length and not end_allowed):
        raise _PatchFailed(f"{op} operation does not apply: index {index} in {pointer} is out of range")
    return index


def _lookup(document: Any, path: list[str]) -> Any:
    """The value at ``path``, or ``_MISSING``."""
    current = document
    for token in path:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and _ARRAY_INDEX.fullmatch(token) and int(token) < len(current):
            current = current[int(token)]
        else:
            return _MISSING
    return current


def _get(document: Any, path: list[str], pointer: str, op: str) -> Any:
    value = _lookup(document, path)
    if value is _MISSING:
        raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {pointer}")
    return value


def _parent(document: Any, path: list[str], pointer: str, op: str) -> tuple[Any, Any]:
    """The container holding ``path``'s last step, and that step (a key, or a raw index token)."""
    container = _lookup(document, path[:-1])
    if not isinstance(container, dict | list):
        raise _PatchFailed(f"{op} operation does not apply: doc is missing path: {pointer}")
    return container, path[-1]


def _existing(container: Any, key: str, pointer: str, op: str) -> Any:
    """``key`` resolved in ``container`` (an int for a list), which must already hold it."""
    if isinstance(container, list):
        return _index(key, len(container), pointer, op, end_allowed=False)
    if key not in container:
        raise _PatchFailed(f"{op} operation does not apply: doc is missing key: {pointer}")
    return key


def _add(document: Any, path: list[str], value: Any, pointer: str) -> Any:
    if not path:
        return value
    container, key = _parent(document, path, pointer, "add")
    if isinstance(container, list):
        container.insert(_index(key, len(container), pointer, "add", end_allowed=True), value)
    else:
        container[key] = value
    return document


def _take(document: Any, path: list[str], pointer: str, op: str) -> Any:
    """Remove and return the value at ``path``."""
    if not path:
        raise _PatchFailed(f"{op} operation does not apply: cannot remove the whole document")
    container, key = _parent(document, path, pointer, op)
    return container.pop(_existing(container, key, pointer, op))


# --- Strategic merge patch ----------------------------------------------------------------------

Path = tuple[str, ...]

# Where a list lives (field names from the object root; list elements add no step) -> how a patch
# merges it: a merge key (lists of objects, merged element by element), or None (lists of scalars,
# merged as an ordered set). Every list not named here is replaced whole, as the real server does
# for e.g. tolerations, containerStatuses, Role rules, EndpointSlice endpoints, volumeClaimTemplates.
# The keys are the patchMergeKey/patchStrategy tags of k8s.io/api.
_OBJECT_META: Final[dict[Path, str | None]] = {
    ("ownerReferences",): "uid",
    ("finalizers",): None,
}
_CONTAINER: Final[dict[Path, str | None]] = {
    ("env",): "name",
    ("ports",): "containerPort",
    ("volumeMounts",): "mountPath",
    ("volumeDevices",): "devicePath",
}
_POD_SPEC_LISTS: Final[dict[Path, str | None]] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("topologySpreadConstraints",): "topologyKey",
    ("schedulingGates",): "name",
    ("resourceClaims",): "name",
}
_POD_STATUS: Final[dict[Path, str | None]] = {
    ("conditions",): "type",
    ("podIPs",): "ip",
    ("hostIPs",): "ip",
}
_CONDITIONS_BY_TYPE: Final[dict[Path, str | None]] = {("status", "conditions"): "type"}


def _under(prefix: Path, table: Mapping[Path, str | None]) -> dict[Path, str | None]:
    return {prefix + path: key for path, key in table.items()}


_POD_SPEC: Final = {
    **_POD_SPEC_LISTS,
    **_under(("containers",), _CONTAINER),
    **_under(("initContainers",), _CONTAINER),
    **_under(("ephemeralContainers",), _CONTAINER),
}
_POD_TEMPLATE: Final = {**_under(("metadata",), _OBJECT_META), **_under(("spec",), _POD_SPEC)}
_WORKLOAD: Final = {**_under(("spec", "template"), _POD_TEMPLATE), **_CONDITIONS_BY_TYPE}

_KIND_LISTS: Final[dict[str, dict[Path, str | None]]] = {
    "Pod": {**_under(("spec",), _POD_SPEC), **_under(("status",), _POD_STATUS)},
    "PodTemplate": _under(("template",), _POD_TEMPLATE),
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "Job": _WORKLOAD,
    "ReplicationController": _WORKLOAD,
    "CronJob": _under(("spec", "jobTemplate", "spec", "template"), _POD_TEMPLATE),
    "Service": {("spec", "ports"): "port", **_CONDITIONS_BY_TYPE},
    "Namespace": _CONDITIONS_BY_TYPE,
    "PersistentVolumeClaim": _CONDITIONS_BY_TYPE,
    "Node": {
        ("spec", "podCIDRs"): None,
        ("status", "addresses"): "type",
        **_CONDITIONS_BY_TYPE,
    },
    "ServiceAccount": {("secrets",): "name"},
}


def _list_strategies(kind: str) -> dict[Path, str | None]:
    return {**_under(("metadata",), _OBJECT_META), **_KIND_LISTS.get(kind, {})}


_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder/"
_DELETE_FROM: Final = "$deleteFromPrimitiveList/"
_DELETED: Final = object()


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any], kind: str) -> dict[str, Any]:
    """``target`` (an object of ``kind``) with a Kubernetes strategic merge ``patch`` applied.

    A kind without merge keys here (a custom resource, say) merges like a JSON merge patch, with
    ObjectMeta's lists still merged. A malformed patch (bad directive, element without its merge key)
    is a 400. Directive keys (``$patch``, ``$retainKeys``, ``$setElementOrder/…``,
    ``$deleteFromPrimitiveList/…``) are obeyed and never stored.
    """
    if not isinstance(patch, dict):
        raise ApiError.bad_request("invalid JSON document: a strategic merge patch must be a JSON object")
    merged = _StrategicMerge(_list_strategies(kind)).merge_map(copy.deepcopy(target), patch, ())
    return {} if merged is _DELETED else merged


class _StrategicMerge:
    """One patch application: the merge-key table of the patched kind, and the recursion over it."""

    def __init__(self, strategies: dict[Path, str | None]) -> None:
        self.strategies = strategies

    def fresh(self, value: Any, path: Path) -> Any:
        """A patch value that meets nothing in the target: directives applied, nulls dropped."""
        if isinstance(value, dict):
            return self.merge_map({}, value, path)
        if isinstance(value, list):
            return self.merge_list([], value, path)
        return value

    def merge_map(self, owned: dict[str, Any], patch: dict[str, Any], path: Path) -> Any:
        """``patch`` merged into ``owned`` (a private copy), or ``_DELETED``."""
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "delete":
                return _DELETED
            if directive == "replace":
                return self.merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, path)
            if directive != "merge":
                raise _bad_patch(path, f"unknown patch type {directive!r} in map")
        result = owned
        if _RETAIN_KEYS in patch:
            self.retain_keys(result, patch, path)
        ordered = self.set_element_orders(result, patch, path)
        for key, value in patch.items():
            if key.startswith("$") or key in ordered:
                # Directives are applied around this loop; an unknown $-key would be dropped by the
                # real server's typed decoding, so it is dropped here too.
                continue
            field = (*path, key)
            current = result.get(key, _MISSING)
            if value is None:
                result.pop(key, None)
            elif isinstance(current, dict) and isinstance(value, dict):
                merged = self.merge_map(current, value, field)
                if merged is _DELETED:
                    del result[key]
                else:
                    result[key] = merged
            elif isinstance(current, list) and isinstance(value, list):
                result[key] = self.merge_list(current, value, field)
            else:
                replacement = self.fresh(value, field)
                if replacement is _DELETED:
                    result.pop(key, None)
                else:
                    result[key] = replacement
        for key, value in patch.items():
            if key.startswith(_DELETE_FROM):
                self.delete_from_primitive_list(result, key[len(_DELETE_FROM) :], value, path)
        return result

    def retain_keys(self, result: dict[str, Any], patch: dict[str, Any], path: Path) -> None:
        retain = patch[_RETAIN_KEYS]
        if not isinstance(retain, list):
            raise _bad_patch(path, "invalid patch format of retainKeys: it must be a list")
        for key, value in patch.items():
            if value is not None and not key.startswith("$") and key not in retain:
                raise _bad_patch(path, f"invalid patch format of retainKeys: {key!r} is set but not retained")
        for key in [k for k in result if k not in retain]:
            del result[key]

    def delete_from_primitive_list(self, result: dict[str, Any], field: str, values: Any, path: Path) -> None:
        if not isinstance(values, list):
            raise _bad_patch(path, f"invalid patch format of primitive list {field!r}: it must be a list")
        current = result.get(field)
        if not isinstance(current, list):
            return
        if any(isinstance(item, dict | list) for item in [*current, *values]):
            raise _bad_patch((*path, field), "$deleteFromPrimitiveList applies to lists of primitives only")
        result[field] = [item for item in current if not any(_json_equal(item, gone) for gone in values)]

    def set_element_orders(self, result: dict[str, Any], patch: dict[str, Any], path: Path) -> set[str]:
        """Apply each ``$setElementOrder/<field>``: merge that field's list and order it; the fields done."""
        done: set[str] = set()
        for directive, order in patch.items():
            if not directive.startswith(_SET_ORDER):
                continue
            field = directive[len(_SET_ORDER) :]
            list_path = (*path, field)
            if not isinstance(order, list):
                raise _bad_patch(
                    path, f"invalid patch format of setElementOrder list {field!r}: it must be a list"
                )
            current, patched = result.get(field, []), patch.get(field, [])
            # A null, a non-list or a replaced list is left to the ordinary merge: no order to keep.
            if (
                not (isinstance(current, list) and isinstance(patched, list))
                or list_path not in self.strategies
            ):
                continue
            if field not in result and field not in patch:
                continue
            server = current
            merged = self.merge_list(server, patched, list_path) if patched else server
            key = self.strategies[list_path]
            if _maps_in(merged, order, list_path):
                if key is None:
                    raise _bad_patch(list_path, "cannot merge lists of objects without a merge key")
                for item in order:
                    if not isinstance(item, dict) or key not in item:
                        raise _bad_patch(list_path, f"setElementOrder item {item!r} lacks merge key {key!r}")
            else:
                key = None
            in_order = [item for item in merged if _position(order, item, key) >= 0]
            server_only = [item for item in merged if _position(order, item, key) < 0]
            result[field] = _normalize_order(in_order, server_only, order, server, key)
            done.add(field)
        return done

    def merge_list(self, owned: list[Any], patch: list[Any], path: Path) -> list[Any]:
        if path not in self.strategies:
            return [self.fresh(item, path) for item in patch if not _is_directive_item(item)]
        key = self.strategies[path]
        if not _maps_in(owned, patch, path):
            merged = list(owned)
            for item in patch:
                if _position(merged, item, None) < 0:
                    merged.append(item)
            in_patch = [item for item in merged if _position(patch, item, None) >= 0]
            server_only = [item for item in merged if _position(patch, item, None) < 0]
            return _normalize_order(in_patch, server_only, patch, owned, None)
        if key is None:
            raise _bad_patch(path, "cannot merge lists of objects without a merge key")
        server, items = self.list_directives(owned, patch, key, path)
        if items is None:
            return server
        merged = list(server)
        for item in items:
            if key not in item:
                raise _bad_patch(path, f"map {item!r} does not contain declared merge key {key!r}")
            found = _position(merged, item, key)
            if found >= 0:
                merged[found] = self.merge_map(merged[found], item, path)
            else:
                merged.append(self.fresh(item, path))
        in_patch = [item for item in merged if _position(items, item, key) >= 0]
        server_only = [item for item in merged if _position(items, item, key) < 0]
        return _normalize_order(in_patch, server_only, items, server, key)

    def list_directives(
        self, owned: list[Any], patch: list[Any], key: str, path: Path
    ) -> tuple[list[Any], list[dict[str, Any]] | None]:
        """Apply ``$patch`` items: the target after deletions and the items left to merge, or the
        replacement list and None when the patch says ``replace``."""
        server = owned
        items: list[dict[str, Any]] = []
        replace = False
        for item in patch:
            if _DIRECTIVE not in item:
                items.append(item)
            elif item[_DIRECTIVE] == "delete":
                if key not in item:
                    raise _bad_patch(path, f"delete directive {item!r} lacks merge key {key!r}")
                server = [kept for kept in server if not _same_key(kept, item, key)]
            elif item[_DIRECTIVE] == "replace":
                replace = True
            else:
                raise _bad_patch(path, f"unknown patch type {item[_DIRECTIVE]!r} in list item")
        if replace:
            return [self.fresh(item, path) for item in items], None
        return server, items


def _bad_patch(path: Path, problem: str) -> ApiError:
    where = ".".join(path) or "<root>"
    return ApiError.bad_request(f"invalid strategic merge patch at {where}: {problem}")


def _is_directive_item(item: Any) -> bool:
    return isinstance(item, dict) and _DIRECTIVE in item


def _maps_in(first: list[Any], second: list[Any], path: Path) -> bool:
    """Whether the lists hold objects (True) or scalars (False); mixed or nested lists are a 400."""
    items = [*first, *second]
    if any(isinstance(item, list) for item in items):
        raise _bad_patch(path, "lists of lists cannot be merged")
    maps = sum(isinstance(item, dict) for item in items)
    if 0 < maps < len(items):
        raise _bad_patch(path, "list items are not all of one type")
    return maps > 0


def _same_key(item: Any, other: Any, key: str) -> bool:
    # A stored item may lack its merge key (the real server would refuse the patch); it matches nothing.
    return all(isinstance(x, dict) and key in x for x in (item, other)) and _json_equal(item[key], other[key])


def _position(items: list[Any], wanted: Any, key: str | None) -> int:
    """Index of ``wanted`` in ``items``: by merge key for objects, by value for scalars; -1 if absent."""
    for index, item in enumerate(items):
        if _same_key(item, wanted, key) if key is not None else _json_equal(item, wanted):
            return index
    return -1


def _normalize_order(
    in_patch: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    key: str | None,
) -> list[Any]:
    """The real server's order for a merged list (strategicpatch's normalizeElementOrder).

    Items the patch names keep the patch's order; items only the server had keep theirs; the two
    runs interleave by the server's order. So an item the server never had lands before the
    server-only items that follow it, which puts an item that a patch adds at the front of the list.
    """

    patch_run = _sorted_by(in_patch, patch_order, key)
    server_run = _sorted_by(server_only, server_order, key)
    merged: list[Any] = []
    i = j = 0
    while i < len(server_run) or j < len(patch_run):
        if j == len(patch_run):
            merged.append(server_run[i])
            i += 1
        elif i == len(server_run):
            merged.append(patch_run[j])
            j += 1
        else:
            left = _position(server_order, server_run[i], key)
            right = _position(server_order, patch_run[j], key)
            if 0 <= left < right:
                merged.append(server_run[i])
                i += 1
            else:
                merged.append(patch_run[j])
                j += 1
    return merged


def _sorted_by(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def rank(item: Any) -> int:
        at = _position(order, item, key)
        return at if at >= 0 else len(order)

    return sorted(items, key=rank)
