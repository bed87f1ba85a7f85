"""What kube-apiserver does to a custom resource with its CRD's ``openAPIV3Schema``.

On create and update the real server prunes unknown fields, drops the nulls the schema does not
allow, applies defaults, and validates: OpenAPI keywords (kube-openapi), embedded resources,
``x-kubernetes-list-type`` uniqueness, then the CEL rules of ``x-kubernetes-validations``, which it
skips, with one ``<nil>`` cause, when a type, required, enum or size error already stands. These
functions do the same, in the same order, and word every cause as the real server does
(``spec.maxReplicas: Invalid value: "string": spec.maxReplicas in body must be of type integer:
"string"``). They are pure: inputs are never changed.

The wording follows kube-apiserver 1.31/1.32. docs/kube-test-server.md lists where this differs.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from kube_test_server import cel
from kube_test_server.cel import CelError, CelEvalError, CelSyntaxError, UnsupportedRule, format_double
from kube_test_server.errors import Cause, go_quote
from kube_test_server.selectors import DNS1035_LABEL

__all__ = ["UnsupportedRule", "admit", "apply_defaults", "check_rules", "prune", "rule_problems", "validate"]

Schema = Mapping[str, Any]

_META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_EMBEDDED = "x-kubernetes-embedded-resource"
_RULES = "x-kubernetes-validations"
_NO_OLD: Any = object()  # "no correlated old value", which differs from an old value of null
_BLOCKED = Cause(
    "<nil>",
    'Invalid value: "null": some validation rules were not checked because the object was invalid; '
    "correct the existing errors to complete validation",
)
_BLOCKING_REASONS = frozenset(
    {
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    }
)
_RULE_REASONS = frozenset(
    {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
)
_MAX_MESSAGE_EXPRESSION_BYTES = 5 * 1024
_OPTIONAL_OLD_SELF = "optionalOldSelf makes oldSelf a CEL optional, and optionals are not implemented"

# Formats kube-apiserver keeps in a CRD schema; it blanks every other one (int32 and int64 included)
# before validating (apiextensions StripUnsupportedFormatsPostProcess), so they check nothing.
_KNOWN_FORMATS = frozenset(
    {
        "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3",
        "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor", "byte",
        "password", "date", "duration", "datetime",
    }
)  # fmt: skip


def _props(s: Schema | None) -> Mapping[str, Schema]:
    if s is None:
        return {}
    props = s.get("properties")
    return props if isinstance(props, Mapping) else {}


def _additional(s: Schema | None) -> Schema | None:
    addl = s.get("additionalProperties") if s is not None else None
    return addl if isinstance(addl, Mapping) else None


def _items(s: Schema | None) -> Schema | None:
    items = s.get("items") if s is not None else None
    return items if isinstance(items, Mapping) else None


def _field_schema(key: str, s: Schema | None) -> Schema | None:
    props = _props(s)
    return props[key] if key in props else _additional(s)


# --- pruning -------------------------------------------------------------------------------------


def prune(obj: Any, schema: Schema) -> Any:
    """``obj`` without the fields ``schema`` does not declare, as the real server stores it.

    ``apiVersion``, ``kind`` and ``metadata`` stay at the root and in an
    ``x-kubernetes-embedded-resource``; ``x-kubernetes-preserve-unknown-fields`` keeps the unknown
    fields of its node (known ones are still pruned below it); ``additionalProperties`` gives the
    schema of every other key."""
    return _prune(obj, schema, embedded=True)


def _prune(value: Any, s: Schema | None, embedded: bool = False) -> Any:
    embedded = embedded or bool(s and s.get(_EMBEDDED))
    preserve = s is not None and s.get(_PRESERVE) is True
    if isinstance(value, dict):
        if s is None:
            return {}
        props = _props(s)
        has_additional = s.get("additionalProperties") is not None
        out: dict[str, Any] = {}
        for key, v in value.items():
            if embedded and key in _META_FIELDS:
                out[key] = copy.deepcopy(v)
            elif key in props:
                out[key] = _prune(v, props[key])
            elif has_additional:
                # additionalProperties: true (or false, which a structural schema forbids) keeps the key
                # but gives its value no schema, so nothing below it survives.
                out[key] = _prune(v, _additional(s))
            elif preserve:
                out[key] = copy.deepcopy(v)
        return out
    if isinstance(value, list):
        items = _items(s)
        if preserve and items is None:
            return copy.deepcopy(value)
        return [_prune(v, items) for v in value]
    return value


# --- defaulting ----------------------------------------------------------------------------------


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """``obj`` with the schema's defaults, as the real server fills them in.

    A missing property gets a deep copy of its ``default``, and so does an explicit null where the
    schema is not ``nullable``; the defaulted value is defaulted in turn, so a defaulted ``{}`` gets
    its children's defaults. Before that, an explicit null the schema neither allows nor defaults is
    dropped (defaulting.PruneNonNullableNullsWithoutDefaults)."""
    return _default(_drop_nulls(obj, schema), schema)


def _drop_nulls(value: Any, s: Schema | None) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, v in value.items():
            sub = _field_schema(key, s)
            if v is None and sub is not None and not sub.get("nullable") and sub.get("default") is None:
                continue
            out[key] = _drop_nulls(v, sub)
        return out
    if isinstance(value, list):
        return [_drop_nulls(v, _items(s)) for v in value]
    return value


def _non_nullable_null(value: Any, s: Schema | None) -> bool:
    return value is None and s is not None and not s.get("nullable")


def _default(value: Any, s: Schema | None) -> Any:
    if s is None:
        return value
    if isinstance(value, dict):
        props = _props(s)
        out = dict(value)
        for key, prop in props.items():
            if prop.get("default") is None:
                continue
            if key not in out or _non_nullable_null(out[key], prop):
                out[key] = copy.deepcopy(prop["default"])
        addl = _additional(s)
        for key in list(out):
            if key in props:
                out[key] = _default(out[key], props[key])
            elif addl is not None:
                if _non_nullable_null(out[key], addl) and addl.get("default") is not None:
                    out[key] = copy.deepcopy(addl["default"])
                out[key] = _default(out[key], addl)
        return out
    if isinstance(value, list):
        items = _items(s)
        if items is None:
            return list(value)
        default = items.get("default")
        return [
            _default(
                copy.deepcopy(default) if default is not None and _non_nullable_null(v, items) else v, items
            )
            for v in value
        ]
    return value


# --- validation ----------------------------------------------------------------------------------


def validate(obj: Any, schema: Schema, path: str = "", old: Any = None) -> list[Cause]:
    """The causes the real server reports for ``obj`` (already pruned and defaulted).

    ``path`` names ``obj`` (``""`` for a whole resource, whose ``metadata`` the schema does not
    validate). ``old``, on an update, is the stored object: transition rules (``oldSelf``) run
    against it, and errors in parts left unchanged are ratcheted (not reported) as the real server
    does. Raises ``UnsupportedRule`` (or ``CelSyntaxError``) for a rule or ``pattern`` this module
    cannot evaluate, rather than pass it; ``check_rules`` finds those at CRD registration."""
    root = path == ""
    old_value = _NO_OLD if old is None else old
    causes: list[Cause] = []
    _validate_node(obj, schema, path, old_value, causes, root=root)
    causes += _embedded_causes(obj, schema, path, root=root)
    if old is None or not _list_type_causes(old, schema, path, root):
        causes += _list_type_causes(obj, schema, path, root)
    if _has_rules(schema):
        if any(c.reason in _BLOCKING_REASONS for c in causes):
            causes.append(_BLOCKED)
        else:
            _rule_causes(obj, old_value, schema, path, root, old is not None and _same(obj, old), causes)
    return causes


def admit(
    obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Cause]]:
    """Prune, default and validate ``obj`` as a create (``old`` None) or an update does."""
    result = apply_defaults(prune(obj, schema), schema)
    return result, validate(result, schema, old=old)


def _name_field(name: str) -> str:
    """The field of a kube-openapi error: its name without the leading dot a root-level name gets."""
    return name.removeprefix(".") or "<nil>"


def _types(s: Schema) -> list[str]:
    if s.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    t = s.get("type")
    return [t] if isinstance(t, str) and t else []


def _format(s: Schema) -> str:
    fmt = s.get("format")
    if not isinstance(fmt, str) or fmt.replace("-", "") not in _KNOWN_FORMATS:
        return ""
    return fmt


def _num(v: Any) -> Any:
    """An int out of int64's range reaches the real server as a float64: Go's JSON decoding."""
    if isinstance(v, int) and not isinstance(v, bool) and not cel.INT64_MIN <= v <= cel.INT64_MAX:
        return float(v)
    return v


def _json_type(v: Any) -> str:
    v = _num(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _is_json_integer(f: float) -> bool:
    # swag.IsFloat64AJSONInteger, which lets 2.0 pass as an integer
    if math.isnan(f) or math.isinf(f) or abs(f) > 2.0**53:
        return False
    return f.is_integer() or abs(f - round(f)) <= 1e-9 * abs(f)


def _validate_node(value: Any, s: Schema, name: str, old: Any, out: list[Cause], root: bool = False) -> None:
    if old is not _NO_OLD and _same(value, old):
        return  # ratcheting: an unchanged value keeps whatever errors it had
    types = _types(s)
    fmt = _format(s)
    if value is None:
        if types and not s.get("nullable"):
            out.append(_type_cause(name, ",".join(types), "null"))
        _check_enum(value, s, name, out)
        return
    value = _num(value)
    _check_type(value, types, fmt, name, out)
    _check_composition(value, s, name, out)
    if isinstance(value, str):
        _check_string(value, s, name, out)
        if fmt:
            _check_format(value, fmt, name, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, s, name, out)
    elif isinstance(value, list):
        _check_array(value, s, name, old, out)
    _check_enum(value, s, name, out)
    if isinstance(value, dict):
        _check_object(value, s, name, old, out, root)


def _type_cause(name: str, expected: str, actual: str) -> Cause:
    return Cause(
        _name_field(name),
        f"Invalid value: {_body(actual)}: {name} in body must be of type {expected}: {go_quote(actual)}",
        "FieldValueTypeInvalid",
    )


def _check_type(value: Any, types: list[str], fmt: str, name: str, out: list[Cause]) -> None:
    """kube-openapi's typeValidator, quirks included: a ``format`` makes a string (or a list) pass a
    type check it would otherwise fail."""
    if not types and not fmt:
        return
    actual = _json_type(value)
    go_format = {"integer": "int64", "number": "float64"}.get(actual, "")
    float_int = actual == "number" and "integer" in types and _is_json_integer(value)
    int_float = actual == "integer" and "number" in types
    string_or_list = isinstance(value, (str, list))
    if not string_or_list and fmt and not (actual in types or go_format == fmt or float_int or int_float):
        out.append(_type_cause(name, fmt, go_format))
        return
    if fmt and string_or_list and "number" not in types and "integer" not in types:
        return
    if not (actual in types or float_int or int_float):
        out.append(_type_cause(name, ",".join(types), actual))


def _errors_of(value: Any, s: Any, name: str) -> list[Cause]:
    found: list[Cause] = []
    if isinstance(s, Mapping):
        _validate_node(value, s, name, _NO_OLD, found)
    return found


def _composite(message: str) -> Cause:
    # errors.New in kube-openapi, which the apiextensions conversion reports with no field path
    return Cause("<nil>", f'Invalid value: "": {message}')


def _closest(results: list[list[Cause]]) -> list[Cause]:
    """The errors of the branch that came closest, which kube-openapi reports with the composite error
    (it counts passed checks; fewest errors, first on a tie, picks the same branch in practice)."""
    best = results[0]
    for result in results[1:]:
        if len(result) < len(best):
            best = result
    return best


def _check_composition(value: Any, s: Schema, name: str, out: list[Cause]) -> None:
    quoted = go_quote(name)
    any_of = s.get("anyOf")
    if isinstance(any_of, list) and any_of:
        results = [_errors_of(value, sub, name) for sub in any_of]
        if all(results):
            out.append(_composite(f"{quoted} must validate at least one schema (anyOf)"))
            out += _closest(results)
    one_of = s.get("oneOf")
    if isinstance(one_of, list) and one_of:
        results = [_errors_of(value, sub, name) for sub in one_of]
        valid = sum(not r for r in results)
        if valid != 1:
            found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            out.append(_composite(f"{quoted} must validate one and only one schema (oneOf). {found}"))
            if valid == 0:
                out += _closest(results)
    all_of = s.get("allOf")
    if isinstance(all_of, list) and all_of:
        results = [_errors_of(value, sub, name) for sub in all_of]
        for result in results:
            out += result
        failed = sum(bool(r) for r in results)
        if failed:
            none = ". None validated" if failed == len(results) else ""
            out.append(_composite(f"{quoted} must validate all the schemas (allOf){none}"))
    not_schema = s.get("not")
    if isinstance(not_schema, Mapping) and not _errors_of(value, not_schema, name):
        out.append(_composite(f"{quoted} must not validate the schema (not)"))


def _check_string(value: str, s: Schema, name: str, out: list[Cause]) -> None:
    # kube-openapi's stringValidator stops at the first failure, in this order.
    max_length, min_length, pattern = s.get("maxLength"), s.get("minLength"), s.get("pattern")
    if max_length is not None and len(value) > max_length:
        unit = "byte" if max_length == 1 else "bytes"
        out.append(
            Cause(
                _name_field(name), f"Too long: may not be more than {max_length} {unit}", "FieldValueTooLong"
            )
        )
    elif min_length is not None and len(value) < min_length:
        out.append(_invalid(name, value, f"{name} in body should be at least {min_length} chars long"))
    elif isinstance(pattern, str) and pattern and _pattern(pattern).search(value) is None:
        out.append(_invalid(name, value, f"{name} in body should match '{pattern}'"))


def _pattern(pattern: str) -> re.Pattern[str]:
    try:
        return cel._regex(pattern)
    except CelEvalError as e:
        raise UnsupportedRule(f"pattern {pattern!r} cannot be evaluated: {e.message}") from None


def _invalid(name: str, value: Any, detail: str) -> Cause:
    return Cause(_name_field(name), f"Invalid value: {_body(value)}: {detail}")


_UUID = {
    "uuid": r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
    "uuid3": r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
    "uuid4": r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
    "uuid5": r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
}
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|[+-][0-9]{2}:[0-9]{2})")


def _is_date(s: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


def _is_date_time(s: str) -> bool:
    # strfmt.IsDateTime: a full date, a "t", then a time whose fields are compared as strings
    parts = s.lower().split("t")
    if len(s) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    m = _TIME.fullmatch(parts[1])
    return m is not None and m.group(1) <= "23" and m.group(2) <= "59" and m.group(3) <= "59"


def _is_ip(s: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(s).version == version or (version == 6 and ":" in s)
    except ValueError:
        return False


def _is_cidr(s: str) -> bool:
    try:
        ipaddress.ip_network(s, strict=False)
    except ValueError:
        return False
    return "/" in s


def _is_base64(s: str) -> bool:
    if not _BASE64.fullmatch(s):
        return False
    try:
        base64.b64decode(s, validate=True)
    except binascii.Error:
        return False
    return True


def _format_ok(fmt: str, value: str) -> bool | None:
    """Whether ``value`` is a valid ``fmt``; None for a format the real server checks and this
    module does not (see the docs)."""
    norm = fmt.replace("-", "")
    if norm in _UUID:
        return re.match(_UUID[norm], value) is not None
    checks: dict[str, Callable[[str], bool]] = {
        "date": _is_date,
        "datetime": _is_date_time,
        "byte": _is_base64,
        "ipv4": lambda v: _is_ip(v, 4) and "." in v,
        "ipv6": lambda v: _is_ip(v, 6) and ":" in v,
        "cidr": _is_cidr,
        "password": lambda v: True,
    }
    check = checks.get(norm)
    return None if check is None else bool(check(value))


def _check_format(value: str, fmt: str, name: str, out: list[Cause]) -> None:
    if _format_ok(fmt, value) is False:
        out.append(
            Cause(
                _name_field(name),
                f"Invalid value: {_body(value)}: {name} in body must be of type {fmt}: {go_quote(value)}",
                "FieldValueTypeInvalid",
            )
        )


def _bound(value: int | float, bound: Any) -> tuple[int | float, str]:
    """The bound as kube-openapi compares it to ``value``: truncated to an int64 for an integer
    value (so minimum 0.5 admits 0), a float64 otherwise; and as its message prints it."""
    if isinstance(value, int):
        as_int = int(bound)
        return as_int, str(as_int)
    return float(bound), format_double(float(bound))


def _check_number(value: int | float, s: Schema, name: str, out: list[Cause]) -> None:
    multiple = s.get("multipleOf")
    if multiple is not None and multiple > 0:
        if isinstance(value, int) and int(multiple) != 0:
            factor, text = _bound(value, multiple)
            ok = value % factor == 0
        else:
            factor, text = float(multiple), format_double(float(multiple))
            ok = _is_json_integer(value / factor if factor >= 1 else (1 / factor) * value)
        if not ok:
            out.append(_invalid(name, value, f"{name} in body should be a multiple of {text}"))
    minimum = s.get("minimum")
    if minimum is not None:
        bound, text = _bound(value, minimum)
        if s.get("exclusiveMinimum") and value <= bound:
            out.append(_invalid(name, value, f"{name} in body should be greater than {text}"))
        elif not s.get("exclusiveMinimum") and value < bound:
            out.append(_invalid(name, value, f"{name} in body should be greater than or equal to {text}"))
    maximum = s.get("maximum")
    if maximum is not None:
        bound, text = _bound(value, maximum)
        if s.get("exclusiveMaximum") and value >= bound:
            out.append(_invalid(name, value, f"{name} in body should be less than {text}"))
        elif not s.get("exclusiveMaximum") and value > bound:
            out.append(_invalid(name, value, f"{name} in body should be less than or equal to {text}"))


def _check_array(value: list[Any], s: Schema, name: str, old: Any, out: list[Cause]) -> None:
    items = _items(s)
    if items is not None:
        old_items = _correlate_list(value, old, s)
        for i, item in enumerate(value):
            _validate_node(item, items, f"{name}[{i}]", old_items[i], out)
    min_items, max_items = s.get("minItems"), s.get("maxItems")
    if min_items is not None and len(value) < min_items:
        out.append(_invalid(name, len(value), f"{name} in body should have at least {min_items} items"))
    if max_items is not None and len(value) > max_items:
        out.append(_too_many(name, len(value), max_items))
    if s.get("uniqueItems") and any(_same(a, b) for i, a in enumerate(value) for b in value[:i]):
        out.append(_invalid(name, "", f"{name} in body shouldn't contain duplicates"))


def _too_many(name: str, actual: int, limit: int) -> Cause:
    return Cause(
        _name_field(name), f"Too many: {actual}: must have at most {limit} items", "FieldValueTooMany"
    )


def _enum_match(value: Any, candidate: Any) -> bool:
    """reflect's ConvertibleTo + Convert + DeepEqual, as kube-openapi compares an enum member: an int
    and a float convert to each other (so 1.0 matches 1, and 1.5 truncates to match 1)."""
    if candidate is None or value is None:
        return False
    if isinstance(candidate, bool) or isinstance(value, bool):
        return type(candidate) is type(value) and candidate == value
    if isinstance(candidate, (int, float)):
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return False
        return bool(float(value) == candidate) if isinstance(candidate, float) else int(value) == candidate
    return type(candidate) is type(value) and _same(value, candidate)


def _check_enum(value: Any, s: Schema, name: str, out: list[Cause]) -> None:
    enum = s.get("enum")
    if not isinstance(enum, list) or not enum:
        return
    if any(_enum_match(value, candidate) for candidate in enum):
        return
    allowed = ", ".join(go_quote(v if isinstance(v, str) else _go_json(v)) for v in enum)
    out.append(
        Cause(
            _name_field(name),
            f"Unsupported value: {_body(value)}: supported values: {allowed}",
            "FieldValueNotSupported",
        )
    )


def _check_object(
    value: dict[str, Any], s: Schema, name: str, old: Any, out: list[Cause], root: bool
) -> None:
    count = len(value)
    min_props, max_props = s.get("minProperties"), s.get("maxProperties")
    # kube-openapi's objectValidator returns on a property count error without looking further.
    if min_props is not None and count < min_props:
        out.append(_invalid(name, count, f"{name} in body should have at least {min_props} properties"))
        return
    if max_props is not None and count > max_props:
        out.append(_too_many(name, count, max_props))
        return
    props = _props(s)
    old_map = old if isinstance(old, dict) else {}
    addl = s.get("additionalProperties")
    for key, v in value.items():
        if key in props or (root and key in _META_FIELDS):
            continue
        if addl is False:
            out.append(_invalid(name, key, f"{name}.{key} in body is a forbidden property"))
        elif isinstance(addl, Mapping):
            _validate_node(v, addl, f"{name}.{key}", old_map.get(key, _NO_OLD), out)
    for key, prop in props.items():
        if key in value and not (root and key == "metadata"):
            _validate_node(value[key], prop, _path_child(name, key), old_map.get(key, _NO_OLD), out)
    for key in s.get("required") or ():
        if key not in value:
            out.append(Cause(_name_field(f"{name}.{key}"), "Required value", "FieldValueRequired"))


def _correlate_list(value: list[Any], old: Any, s: Schema) -> list[Any]:
    """The old element each element stands for: only a list-type map correlates, by its keys."""
    keys = s.get("x-kubernetes-list-map-keys")
    if not isinstance(old, list) or s.get("x-kubernetes-list-type") != "map" or not keys:
        return [_NO_OLD] * len(value)

    def key_of(item: Any) -> str | None:
        if not isinstance(item, dict):
            return None
        return _go_json([item.get(k) for k in keys])

    by_key = {key_of(item): item for item in old if key_of(item) is not None}
    return [by_key.get(key_of(item), _NO_OLD) if key_of(item) is not None else _NO_OLD for item in value]


# --- embedded resources and list types (field.Path paths: spec.items[2], spec.labels[key]) ----------


def _path_child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _embedded_causes(value: Any, s: Schema | None, path: str, root: bool = False) -> list[Cause]:
    if s is None:
        return []
    out: list[Cause] = []
    if isinstance(value, dict):
        if s.get(_EMBEDDED) and not root:
            out += _embedded_resource_causes(value, path)
        props, addl = _props(s), _additional(s)
        for key, v in value.items():
            if key in props:
                out += _embedded_causes(v, props[key], _path_child(path, key))
            elif addl is not None:
                out += _embedded_causes(v, addl, f"{path}[{key}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _embedded_causes(v, _items(s), f"{path}[{i}]")
    return out


def _embedded_resource_causes(value: dict[str, Any], path: str) -> list[Cause]:
    out: list[Cause] = []
    for key in ("apiVersion", "kind"):
        if key not in value:
            out.append(Cause(_path_child(path, key), "Required value", "FieldValueRequired"))
    for key in ("apiVersion", "kind"):
        if key not in value:
            continue
        v, field = value[key], _path_child(path, key)
        if not isinstance(v, str):
            out.append(Cause(field, f"Invalid value: {_body(v)}: must be a string"))
        elif not v:
            out.append(Cause(field, 'Invalid value: "": must not be empty'))
        elif key == "apiVersion" and v.count("/") > 1:
            out.append(Cause(field, f"Invalid value: {_body(v)}: unexpected GroupVersion string: {v}"))
        elif key == "kind":
            problems = []
            if len(v) > DNS1035_LABEL.max_length:
                problems.append(f"must be no more than {DNS1035_LABEL.max_length} characters")
            if not DNS1035_LABEL.matches(v.lower()):
                problems.append(DNS1035_LABEL.message)
            if problems:
                detail = "may have mixed case, but should otherwise match: " + ",".join(problems)
                out.append(Cause(field, f"Invalid value: {_body(v)}: {detail}"))
    return out


def _list_type_causes(value: Any, s: Schema | None, path: str, root: bool = False) -> list[Cause]:
    if s is None:
        return []
    out: list[Cause] = []
    if isinstance(value, dict):
        props, addl = _props(s), _additional(s)
        for key, v in value.items():
            if root and key == "metadata":
                continue
            if key in props:
                out += _list_type_causes(v, props[key], _path_child(path, key))
            elif addl is not None:
                out += _list_type_causes(v, addl, f"{path}[{key}]")
    elif isinstance(value, list):
        list_type = s.get("x-kubernetes-list-type")
        if list_type == "set":
            for i in _duplicates(value):
                out.append(_duplicate(f"{path}[{i}]", value[i]))
        elif list_type == "map":
            out += _list_map_causes(value, s, path)
        for i, v in enumerate(value):
            out += _list_type_causes(v, _items(s), f"{path}[{i}]")
    return out


def _duplicate(field: str, value: Any) -> Cause:
    return Cause(field, f"Duplicate value: {_body(value)}", "FieldValueDuplicate")


def _duplicates(values: list[Any]) -> list[int]:
    """The second appearance of each repeated element (structurallisttype.validateListSet): Go map
    keys for scalars, so 1 and 1.0 differ, and the JSON text for objects and lists."""
    seen: dict[Any, int] = {}
    found = []
    for i, v in enumerate(values):
        key = ("json", _go_json(v)) if isinstance(v, (dict, list)) else (type(v).__name__, v)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            found.append(i)
    return found


_UNSPECIFIED: Any = object()


def _list_map_causes(value: list[Any], s: Schema, path: str) -> list[Cause]:
    for i, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            return [
                Cause(
                    f"{path}[{i}]",
                    f"Invalid value: {_body(item)}: must be an object for an array of list-type map",
                )
            ]
    keys = s.get("x-kubernetes-list-map-keys") or []
    if len(value) <= 1:
        return []
    if len(keys) == 1:
        key = keys[0]
        found = [_UNSPECIFIED if item is None or key not in item else item[key] for item in value]
        markers = [("unspecified", 0) if k is _UNSPECIFIED else k for k in found]
        return [
            _duplicate(f"{path}[{i}]", {} if found[i] is _UNSPECIFIED else {key: found[i]})
            for i in _duplicates(markers)
        ]
    compound = [{k: item[k] for k in keys if k in item} if item is not None else {} for item in value]
    return [_duplicate(f"{path}[{i}]", compound[i]) for i in _duplicates(compound)]


# --- CEL rules -------------------------------------------------------------------------------------


def _has_rules(s: Any) -> bool:
    if not isinstance(s, Mapping):
        return False
    if s.get(_RULES):
        return True
    nested: list[Any] = [*_props(s).values(), s.get("additionalProperties"), s.get("items")]
    nested += s.get("allOf") or []
    return any(_has_rules(sub) for sub in nested)


def _to_cel(value: Any, s: Schema | None, resource_root: bool) -> Any:
    """The value a rule sees: a number field's integers are doubles, as Kubernetes converts them,
    and a resource root's metadata shows only name and generateName."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, v in value.items():
            if resource_root and key == "metadata":
                out[key] = {k: v[k] for k in ("name", "generateName") if isinstance(v, dict) and k in v}
                continue
            sub = _field_schema(key, s)
            out[key] = _to_cel(v, sub, bool(sub and sub.get(_EMBEDDED)))
        return out
    if isinstance(value, list):
        items = _items(s)
        return [_to_cel(v, items, bool(items and items.get(_EMBEDDED))) for v in value]
    value = _num(value)
    kind = s.get("type") if s is not None else None
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _rule_causes(
    value: Any, old: Any, s: Schema, path: str, resource_root: bool, unchanged: bool, out: list[Cause]
) -> None:
    """cel.Validator.validate: the rules of this node (and of its allOf), then its children.

    ``unchanged`` is whether the nearest correlated value equals its old value: a failure there is
    ratcheted (the real server only warns) unless the rule is a transition rule."""
    if value is None:
        return  # rules only ever see non-null values
    for sub in (s, *(a for a in s.get("allOf") or () if isinstance(a, Mapping))):
        _run_rules(value, old, sub, s, path, resource_root, unchanged, out)
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) and s.get("x-kubernetes-map-type") != "atomic" else {}
        props, addl = _props(s), _additional(s)
        if addl is not None:
            for key, v in value.items():
                if key not in props:
                    child_old = old_map.get(key, _NO_OLD)
                    still = _same(v, child_old) if child_old is not _NO_OLD else unchanged
                    _rule_causes(v, child_old, addl, f"{path}[{key}]", bool(addl.get(_EMBEDDED)), still, out)
        for key, v in value.items():
            if key in props and not (resource_root and key == "metadata"):
                child_old = old_map.get(key, _NO_OLD)
                still = _same(v, child_old) if child_old is not _NO_OLD else unchanged
                prop = props[key]
                _rule_causes(
                    v, child_old, prop, _path_child(path, key), bool(prop.get(_EMBEDDED)), still, out
                )
    elif isinstance(value, list):
        items = _items(s)
        if items is not None:
            old_items = _correlate_list(value, old, s)
            for i, v in enumerate(value):
                still = _same(v, old_items[i]) if old_items[i] is not _NO_OLD else unchanged
                _rule_causes(v, old_items[i], items, f"{path}[{i}]", bool(items.get(_EMBEDDED)), still, out)


def _run_rules(
    value: Any,
    old: Any,
    rules_schema: Schema,
    node_schema: Schema,
    path: str,
    resource_root: bool,
    unchanged: bool,
    out: list[Cause],
) -> None:
    rules = rules_schema.get(_RULES) or []
    if not rules:
        return
    here = path or "<nil>"
    kind = node_schema.get("type") or ""
    bindings = {"self": _to_cel(value, node_schema, resource_root)}
    if old is not _NO_OLD and old is not None:
        bindings["oldSelf"] = _to_cel(old, node_schema, resource_root)
    for rule in rules:
        if rule.get("optionalOldSelf"):
            raise UnsupportedRule(_OPTIONAL_OLD_SELF)
        program = cel.compile(rule["rule"])
        if program.uses_old_self and "oldSelf" not in bindings:
            continue  # a transition rule runs only when there is an old value to compare with
        error_text = (rule.get("message") or "").strip() or rule["rule"].strip()
        try:
            result = program.evaluate(bindings)
        except CelEvalError as e:
            if e.message.startswith("no such overload"):
                detail = (
                    f"'{e.message}': call arguments did not match a supported operator, function or macro "
                    f"signature for rule: {error_text}"
                )
            else:
                detail = f"{e.message} evaluating rule: {error_text}"
            out.append(Cause(here, f"Invalid value: {_body(kind)}: {detail}"))
            continue
        if result is True or (unchanged and not program.uses_old_self):
            continue
        target = path
        if rule.get("fieldPath"):
            relative = _normalized_field_path(rule["fieldPath"], node_schema)
            target = f"{path}.{relative}" if path else relative
        message = (rule.get("message") or "").strip() or f"failed rule: {rule['rule'].strip()}"
        if rule.get("messageExpression"):
            message = _message_expression(rule["messageExpression"], bindings) or message
        out.append(_rule_cause(target or "<nil>", kind, message, rule.get("reason")))


def _message_expression(expr: str, bindings: dict[str, Any]) -> str | None:
    """The evaluated messageExpression, or None where the real server falls back to the message."""
    try:
        text = cel.compile(expr).evaluate(bindings)
    except CelEvalError:
        return None
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or "\n" in text or len(text.encode()) > _MAX_MESSAGE_EXPRESSION_BYTES:
        return None
    return text


def _rule_cause(field: str, kind: str, detail: str, reason: str | None) -> Cause:
    if reason == "FieldValueForbidden":
        return Cause(field, f"Forbidden: {detail}", reason)
    if reason == "FieldValueRequired":
        return Cause(field, f"Required value: {detail}", reason)
    if reason == "FieldValueDuplicate":
        return Cause(field, f"Duplicate value: {_body(kind)}", reason)
    return Cause(field, f"Invalid value: {_body(kind)}: {detail}")


_FIELD_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]")


def _normalized_field_path(field_path: str, s: Schema) -> str:
    """A rule's fieldPath as the real server prints it (cel.ValidFieldPath): ``.a.b`` stays ``a.b``,
    a map key becomes ``[key]``. CelSyntaxError when it does not name a field of the schema, which
    the real server refuses when the CRD is created."""
    out = ""
    node: Schema | None = s
    pos = 0
    while pos < len(field_path):
        m = _FIELD_PATH_TOKEN.match(field_path, pos)
        if m is None or node is None:
            raise CelSyntaxError(f"fieldPath {field_path!r} does not refer to a valid field")
        name = m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2))
        pos = m.end()
        if node.get("properties") is not None:
            if name not in _props(node):
                raise CelSyntaxError(f"fieldPath {field_path!r} does not refer to a valid field")
            out = _path_child(out, name)
            node = _props(node)[name]
        elif _additional(node) is not None:
            out = f"{out}[{name}]"
            node = _additional(node)
        else:
            raise CelSyntaxError(f"fieldPath {field_path!r} does not refer to a valid field")
    return out


# --- registration-time checks ----------------------------------------------------------------------


def _schema_nodes(s: Any, where: str, correlatable: bool = True) -> Iterator[tuple[Schema, str, bool]]:
    """Every schema node, with its path in the CRD (``openAPIV3Schema.properties[spec]``) and whether
    the real server can correlate it with an old value (what ``oldSelf`` needs)."""
    if not isinstance(s, Mapping):
        return
    yield s, where, correlatable
    for key, prop in _props(s).items():
        yield from _schema_nodes(prop, f"{where}.properties[{key}]", correlatable)
    yield from _schema_nodes(
        s.get("additionalProperties"),
        f"{where}.additionalProperties",
        correlatable and s.get("x-kubernetes-map-type") != "atomic",
    )
    yield from _schema_nodes(
        s.get("items"), f"{where}.items", correlatable and s.get("x-kubernetes-list-type") == "map"
    )
    for i, sub in enumerate(s.get("allOf") or ()):
        yield from _schema_nodes(sub, f"{where}.allOf[{i}]", correlatable)


def _compile_problem(expr: Any) -> str | None:
    if not isinstance(expr, str):
        return "must be a string"
    try:
        cel.compile(expr)
    except UnsupportedRule as e:
        return f"unsupported by this test server: {e}"
    except CelError as e:
        return f"compilation failed: {e}"
    return None


def rule_problems(schema: Schema, where: str = "openAPIV3Schema") -> list[str]:
    """One line per thing in ``schema`` that this module cannot evaluate, or that kube-apiserver
    would refuse when the CRD is created: a rule or messageExpression that does not compile (or uses
    CEL this evaluator lacks), an unknown reason, a fieldPath naming no field, ``oldSelf`` where no
    old value can be correlated, a ``pattern`` it cannot run. Each line starts with its path."""
    problems: list[str] = []
    for node, path, correlatable in _schema_nodes(schema, where):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                _pattern(pattern)
            except UnsupportedRule as e:
                problems.append(f"{path}.pattern: {e}")
        for i, rule in enumerate(node.get(_RULES) or ()):
            at = f"{path}.{_RULES}[{i}]"
            if not isinstance(rule, Mapping):
                problems.append(f"{at}: must be an object")
                continue
            for key in ("rule", "messageExpression"):
                if key in rule and (problem := _compile_problem(rule[key])) is not None:
                    problems.append(f"{at}.{key}: {problem}")
            if "rule" not in rule:
                problems.append(f"{at}.rule: Required value")
            if rule.get("reason") is not None and rule["reason"] not in _RULE_REASONS:
                allowed = ", ".join(f'"{r}"' for r in sorted(_RULE_REASONS))
                problems.append(
                    f'{at}.reason: Unsupported value: "{rule["reason"]}": supported values: {allowed}'
                )
            if rule.get("fieldPath"):
                try:
                    _normalized_field_path(rule["fieldPath"], node)
                except CelSyntaxError as e:
                    problems.append(f"{at}.fieldPath: {e}")
            if rule.get("optionalOldSelf"):
                problems.append(
                    f"{at}.optionalOldSelf: unsupported by this test server: {_OPTIONAL_OLD_SELF}"
                )
            rule_ok = _compile_problem(rule.get("rule")) is None
            if not correlatable and rule_ok and cel.compile(rule["rule"]).uses_old_self:
                problems.append(
                    f"{at}.rule: oldSelf cannot be used on the uncorrelatable portion of the schema "
                    f"within {path}"
                )
    return problems


def check_rules(schema: Schema) -> list[str]:
    """The rules (and messageExpressions) in ``schema`` that do not compile here, each as written.

    A CRD with any must be refused: this module raises rather than skip a rule it cannot evaluate.
    ``rule_problems`` says why each fails, with its path, and finds the other problems too."""
    failing: list[str] = []
    for node, _path, _correlatable in _schema_nodes(schema, ""):
        for rule in node.get(_RULES) or ():
            if not isinstance(rule, Mapping):
                continue
            if "rule" in rule and (_compile_problem(rule["rule"]) is not None or rule.get("optionalOldSelf")):
                failing.append(str(rule["rule"]))
            if "messageExpression" in rule and _compile_problem(rule["messageExpression"]) is not None:
                failing.append(str(rule["messageExpression"]))
    return failing


# --- Go's printing of values in field errors -----------------------------------------------------


def _go_sharp_v(v: Any) -> str:
    """``%#v`` of a decoded JSON value, as Go prints one nested in an interface{}."""
    if v is None:
        return "interface {}(nil)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_double(v)
    if isinstance(v, str):
        return go_quote(v)
    if isinstance(v, list):
        return "[]interface {}{" + ", ".join(_go_sharp_v(x) for x in v) + "}"
    if isinstance(v, dict):
        entries = ", ".join(f"{go_quote(str(k))}:{_go_sharp_v(v[k])}" for k in sorted(v))
        return "map[string]interface {}{" + entries + "}"
    return repr(v)


def _body(v: Any) -> str:
    """The bad value in a field error's body (field.Error.ErrorBody)."""
    v = _num(v)
    return '"null"' if v is None else _go_sharp_v(v)


def _go_json(v: Any) -> str:
    """encoding/json.Marshal: sorted keys, floats printed as Go prints them, HTML escaped."""
    if isinstance(v, float) and not isinstance(v, bool):
        if not math.isfinite(v):
            return "null"  # json.Marshal fails on these; they cannot come from JSON anyway
        if v == 0 or 1e-6 <= abs(v) < 1e21:
            text = format(Decimal(repr(v)), "f")
            return text.rstrip("0").rstrip(".") if "." in text else text
        return re.sub(r"e-0(\d)$", r"e-\1", format_double(v))
    if isinstance(v, list):
        return "[" + ",".join(_go_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_go_json(str(k))}:{_go_json(v[k])}" for k in sorted(v)) + "}"
    text = json.dumps(v, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _same(a: Any, b: Any) -> bool:
    """reflect.DeepEqual on decoded JSON: 1, 1.0 and true are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
