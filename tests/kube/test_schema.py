"""Pruning, defaulting and validation of a custom resource against its CRD schema, with the field
paths, messages and reasons kube-apiserver reports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_test_server.cel import CelSyntaxError, UnsupportedRule
from kube_test_server.errors import Cause
from kube_test_server.schema import admit, apply_defaults, check_rules, prune, rule_problems, validate

INVALID = "FieldValueInvalid"
TYPE = "FieldValueTypeInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
BLOCKED = (
    "<nil>",
    'Invalid value: "null": some validation rules were not checked because the object was invalid; '
    "correct the existing errors to complete validation",
    INVALID,
)

Found = list[tuple[str, str, str]]

# The autoscaler CRD the operator registers, trimmed to what these tests exercise.
AUTOSCALER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                "autoscaling": {
                    "type": "object",
                    "default": {},
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.minReplicas <= self.maxReplicas",
                            "message": "minReplicas must not exceed maxReplicas",
                        }
                    ],
                    "properties": {
                        "enabled": {"type": "boolean", "default": True},
                        "minReplicas": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
                        "maxReplicas": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 8},
                        "targetPerReplica": {
                            "type": "number",
                            "minimum": 0,
                            "exclusiveMinimum": True,
                            "default": 1,
                        },
                    },
                },
                "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "conditions": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": {
                        "type": "object",
                        "required": ["type", "status"],
                        "properties": {"type": {"type": "string"}, "status": {"type": "string"}},
                    },
                },
            },
        },
    },
}


def resource(spec: Any, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "gpuscale.io/v1alpha1", "kind": "GpuInferenceService", "metadata": {"name": "web"},
            "spec": spec, **extra}  # fmt: skip


def spec_schema(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"spec": {"type": "object", "properties": props, **extra}}}


def found(obj: Any, schema: dict[str, Any], old: Any = None, path: str = "") -> Found:
    return [(c.field, c.message, c.reason) for c in validate(obj, schema, path, old=old)]


# --- pruning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "obj", "expected"),
    [
        pytest.param(
            spec_schema({"a": {"type": "integer"}}),
            {
                "apiVersion": "v",
                "kind": "K",
                "metadata": {"name": "n", "x": 1},
                "spec": {"a": 1, "b": 2},
                "junk": 3,
            },
            {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "x": 1}, "spec": {"a": 1}},
            id="unknown fields go, apiVersion kind and metadata stay at the root",
        ),
        pytest.param(
            spec_schema({"o": {"type": "object", "properties": {"k": {"type": "string"}}}}),
            {"spec": {"o": {"k": "v", "u": {"deep": 1}}}},
            {"spec": {"o": {"k": "v"}}},
            id="nested unknown field",
        ),
        pytest.param(
            spec_schema({"o": {"type": "object"}}),
            {"spec": {"o": {"k": "v"}}},
            {"spec": {"o": {}}},
            id="an object without properties keeps nothing",
        ),
        pytest.param(
            spec_schema(
                {
                    "t": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {"known": {"type": "object", "properties": {"a": {"type": "integer"}}}},
                    }
                }
            ),
            {"spec": {"t": {"free": {"any": [1, {"x": 2}]}, "known": {"a": 1, "b": 2}}}},
            {"spec": {"t": {"free": {"any": [1, {"x": 2}]}, "known": {"a": 1}}}},
            id="preserve-unknown-fields keeps unknown fields but prunes below known ones",
        ),
        pytest.param(
            spec_schema(
                {"m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"a": {}}}}}
            ),
            {"spec": {"m": {"one": {"a": 1, "b": 2}, "two": {}}}},
            {"spec": {"m": {"one": {"a": 1}, "two": {}}}},
            id="additionalProperties gives every key its schema",
        ),
        pytest.param(
            spec_schema({"m": {"type": "object", "additionalProperties": True}}),
            {"spec": {"m": {"k": "v", "o": {"inner": 1}}}},
            {"spec": {"m": {"k": "v", "o": {}}}},
            id="additionalProperties true keeps keys but no schema below them",
        ),
        pytest.param(
            spec_schema({"l": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}}}),
            {"spec": {"l": [{"a": 1, "b": 2}, {"c": 3}, None]}},
            {"spec": {"l": [{"a": 1}, {}, None]}},
            id="list items are pruned one by one",
        ),
        pytest.param(
            spec_schema(
                {
                    "e": {
                        "type": "object",
                        "x-kubernetes-embedded-resource": True,
                        "properties": {"spec": {"type": "object", "properties": {"a": {}}}},
                    }
                }
            ),
            {
                "spec": {
                    "e": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": "p"},
                        "spec": {"a": 1, "b": 2},
                    }
                }
            },
            {"spec": {"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": 1}}}},
            id="an embedded resource keeps its apiVersion kind and metadata",
        ),
        pytest.param(
            spec_schema({"o": {"type": "object", "properties": {"apiVersion": {}}}}),
            {"spec": {"o": {"apiVersion": "v1", "kind": "K", "metadata": {}}}},
            {"spec": {"o": {"apiVersion": "v1"}}},
            id="below the root kind and metadata are ordinary fields",
        ),
        pytest.param(
            spec_schema({"a": {"type": "integer"}, "s": {"type": "string"}}),
            {"spec": {"a": None, "s": "x"}},
            {"spec": {"a": None, "s": "x"}},
            id="pruning leaves values and nulls alone",
        ),
        pytest.param(
            {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            {"metadata": {}, "anything": {"goes": [1]}},
            {"metadata": {}, "anything": {"goes": [1]}},
            id="a root that preserves everything",
        ),
    ],
)
def test_prune(schema: dict[str, Any], obj: Any, expected: Any) -> None:
    assert prune(obj, schema) == expected


def test_prune_the_autoscaler_resource() -> None:
    obj = resource(
        {
            "image": "srv",
            "typo": 1,
            "autoscaling": {"maxReplica": 3},
            "template": {"spec": {"nodeSelector": {}}},
        },
        status={"replicas": 2, "phase": "Running"},
    )
    assert prune(obj, AUTOSCALER) == resource(
        {"image": "srv", "autoscaling": {}, "template": {"spec": {"nodeSelector": {}}}},
        status={"replicas": 2},
    )


# --- defaulting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "spec", "expected"),
    [
        pytest.param({"a": {"type": "integer", "default": 3}}, {}, {"a": 3}, id="missing property"),
        pytest.param({"a": {"type": "integer", "default": 3}}, {"a": 5}, {"a": 5}, id="a given value wins"),
        pytest.param(
            {"o": {"type": "object", "default": {}, "properties": {"x": {"type": "integer", "default": 1}}}},
            {},
            {"o": {"x": 1}},
            id="a defaulted empty object gets its children's defaults",
        ),
        pytest.param(
            {
                "o": {
                    "type": "object",
                    "default": {"x": 5},
                    "properties": {
                        "x": {"type": "integer", "default": 1},
                        "y": {"type": "integer", "default": 2},
                    },
                }
            },
            {},
            {"o": {"x": 5, "y": 2}},
            id="a default object keeps its own values and gains the missing ones",
        ),
        pytest.param(
            {"o": {"type": "object", "properties": {"x": {"type": "integer", "default": 1}}}},
            {},
            {},
            id="an absent object without a default is not created",
        ),
        pytest.param(
            {"o": {"type": "object", "properties": {"x": {"type": "integer", "default": 1}}}},
            {"o": {}},
            {"o": {"x": 1}},
            id="a given empty object is defaulted",
        ),
        pytest.param(
            {"a": {"type": "integer", "default": 3}},
            {"a": None},
            {"a": 3},
            id="non-nullable null with a default",
        ),
        pytest.param(
            {"a": {"type": "integer", "nullable": True, "default": 3}},
            {"a": None},
            {"a": None},
            id="nullable null with a default stays null",
        ),
        pytest.param(
            {"a": {"type": "integer"}}, {"a": None}, {}, id="non-nullable null without a default is dropped"
        ),
        pytest.param(
            {"a": {"type": "integer", "nullable": True}}, {"a": None}, {"a": None}, id="nullable null is kept"
        ),
        pytest.param({"a": {"type": "integer", "default": None}}, {}, {}, id="a null default is no default"),
        pytest.param(
            {
                "l": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"p": {"type": "integer", "default": 80}}},
                }
            },
            {"l": [{}, {"p": 1}]},
            {"l": [{"p": 80}, {"p": 1}]},
            id="list items",
        ),
        pytest.param(
            {"l": {"type": "array", "items": {"type": "string", "default": "x"}}},
            {"l": ["a", None]},
            {"l": ["a", "x"]},
            id="a null list item gets the items default",
        ),
        pytest.param(
            {"l": {"type": "array", "items": {"type": "string"}}},
            {"l": ["a", None]},
            {"l": ["a", None]},
            id="a null list item without a default stays, for validation to report",
        ),
        pytest.param(
            {
                "m": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"w": {"type": "integer", "default": 1}},
                    },
                }
            },
            {"m": {"a": {}, "b": {"w": 2}}},
            {"m": {"a": {"w": 1}, "b": {"w": 2}}},
            id="additionalProperties values",
        ),
        pytest.param(
            {"m": {"type": "object", "additionalProperties": {"type": "string"}}},
            {"m": {"a": None, "b": "x"}},
            {"m": {"b": "x"}},
            id="a null map value the schema does not allow is dropped",
        ),
        pytest.param(
            {"t": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            {"t": {"free": None}},
            {"t": {"free": None}},
            id="an unknown preserved null is left alone",
        ),
    ],
)
def test_apply_defaults(props: dict[str, Any], spec: Any, expected: Any) -> None:
    assert apply_defaults({"spec": spec}, spec_schema(props)) == {"spec": expected}


def test_defaults_on_create_of_the_autoscaler() -> None:
    obj, causes = admit(resource({"image": "srv"}), AUTOSCALER)
    assert causes == []
    assert obj["spec"] == {
        "image": "srv",
        "port": 8000,
        "replicas": 1,
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "targetPerReplica": 1},
    }


def test_defaults_fill_a_partial_nested_object() -> None:
    obj, causes = admit(resource({"image": "srv", "autoscaling": {"maxReplicas": 3}}), AUTOSCALER)
    assert causes == []
    assert obj["spec"]["autoscaling"] == {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetPerReplica": 1,
    }


# --- validation: one table per keyword, the value under spec.x ---------------------------------------


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        # type
        pytest.param(
            {"type": "integer"},
            "string",
            [("spec.x", 'Invalid value: "string": spec.x in body must be of type integer: "string"', TYPE)],
            id="integer/string",
        ),
        pytest.param(
            {"type": "integer"},
            1.5,
            [("spec.x", 'Invalid value: "number": spec.x in body must be of type integer: "number"', TYPE)],
            id="integer/1.5",
        ),
        pytest.param(
            {"type": "integer"},
            True,
            [("spec.x", 'Invalid value: "boolean": spec.x in body must be of type integer: "boolean"', TYPE)],
            id="integer/bool",
        ),
        pytest.param({"type": "integer"}, 2.0, [], id="integer/2.0 is a JSON integer"),
        pytest.param({"type": "number"}, 3, [], id="number/int"),
        pytest.param(
            {"type": "number"},
            "1",
            [("spec.x", 'Invalid value: "string": spec.x in body must be of type number: "string"', TYPE)],
            id="number/string",
        ),
        pytest.param(
            {"type": "string"},
            1,
            [("spec.x", 'Invalid value: "integer": spec.x in body must be of type string: "integer"', TYPE)],
            id="string/int",
        ),
        pytest.param(
            {"type": "boolean"},
            "true",
            [("spec.x", 'Invalid value: "string": spec.x in body must be of type boolean: "string"', TYPE)],
            id="boolean/string",
        ),
        pytest.param(
            {"type": "object"},
            [],
            [("spec.x", 'Invalid value: "array": spec.x in body must be of type object: "array"', TYPE)],
            id="object/array",
        ),
        pytest.param(
            {"type": "array"},
            {},
            [("spec.x", 'Invalid value: "object": spec.x in body must be of type array: "object"', TYPE)],
            id="array/object",
        ),
        # nullable
        pytest.param(
            {"type": "integer"},
            None,
            [("spec.x", 'Invalid value: "null": spec.x in body must be of type integer: "null"', TYPE)],
            id="null/not nullable",
        ),
        pytest.param({"type": "integer", "nullable": True}, None, [], id="null/nullable"),
        # int-or-string
        pytest.param({"x-kubernetes-int-or-string": True}, 80, [], id="int-or-string/int"),
        pytest.param({"x-kubernetes-int-or-string": True}, "http", [], id="int-or-string/string"),
        pytest.param(
            {"x-kubernetes-int-or-string": True},
            1.5,
            [
                (
                    "spec.x",
                    'Invalid value: "number": spec.x in body must be of type integer,string: "number"',
                    TYPE,
                )
            ],
            id="int-or-string/float",
        ),
        pytest.param(
            {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            True,
            [
                (
                    "spec.x",
                    'Invalid value: "boolean": spec.x in body must be of type integer,string: "boolean"',
                    TYPE,
                ),
                ("<nil>", 'Invalid value: "": "spec.x" must validate at least one schema (anyOf)', INVALID),
                (
                    "spec.x",
                    'Invalid value: "boolean": spec.x in body must be of type integer: "boolean"',
                    TYPE,
                ),
            ],
            id="int-or-string with its anyOf",
        ),
        # enum
        pytest.param(
            {"type": "string", "enum": ["a", "b"]},
            "c",
            [("spec.x", 'Unsupported value: "c": supported values: "a", "b"', NOT_SUPPORTED)],
            id="enum/string",
        ),
        pytest.param(
            {"type": "integer", "enum": [1, 2]},
            3,
            [("spec.x", 'Unsupported value: 3: supported values: "1", "2"', NOT_SUPPORTED)],
            id="enum/int",
        ),
        pytest.param({"type": "number", "enum": [1, 2]}, 1.0, [], id="enum/1.0 converts to 1"),
        pytest.param(
            {"type": "number", "enum": [0.5, 1]},
            2,
            [("spec.x", 'Unsupported value: 2: supported values: "0.5", "1"', NOT_SUPPORTED)],
            id="enum/numbers printed as JSON",
        ),
        pytest.param(
            {"type": "string", "nullable": True, "enum": ["a"]},
            None,
            [("spec.x", 'Unsupported value: "null": supported values: "a"', NOT_SUPPORTED)],
            id="enum/null is never a member",
        ),
        # numbers
        pytest.param(
            {"type": "integer", "minimum": 1},
            0,
            [("spec.x", "Invalid value: 0: spec.x in body should be greater than or equal to 1", INVALID)],
            id="minimum",
        ),
        pytest.param(
            {"type": "integer", "maximum": 8},
            9,
            [("spec.x", "Invalid value: 9: spec.x in body should be less than or equal to 8", INVALID)],
            id="maximum",
        ),
        pytest.param(
            {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
            0,
            [("spec.x", "Invalid value: 0: spec.x in body should be greater than 0", INVALID)],
            id="exclusiveMinimum",
        ),
        pytest.param(
            {"type": "integer", "maximum": 8, "exclusiveMaximum": True},
            8,
            [("spec.x", "Invalid value: 8: spec.x in body should be less than 8", INVALID)],
            id="exclusiveMaximum",
        ),
        pytest.param({"type": "integer", "minimum": 1, "maximum": 8}, 8, [], id="bounds are inclusive"),
        pytest.param(
            {"type": "number", "minimum": 0.1},
            0.05,
            [
                (
                    "spec.x",
                    "Invalid value: 0.05: spec.x in body should be greater than or equal to 0.1",
                    INVALID,
                )
            ],
            id="minimum/double",
        ),
        pytest.param(
            {"type": "number", "maximum": 1000000},
            2500000.0,
            [
                (
                    "spec.x",
                    "Invalid value: 2.5e+06: spec.x in body should be less than or equal to 1e+06",
                    INVALID,
                )
            ],
            id="maximum/double printed as Go prints it",
        ),
        pytest.param(
            {"type": "integer", "minimum": 0.5}, 0, [], id="an int is compared with the bound truncated"
        ),
        pytest.param(
            {"type": "integer", "multipleOf": 2},
            7,
            [("spec.x", "Invalid value: 7: spec.x in body should be a multiple of 2", INVALID)],
            id="multipleOf",
        ),
        pytest.param(
            {"type": "number", "multipleOf": 0.5},
            1.25,
            [("spec.x", "Invalid value: 1.25: spec.x in body should be a multiple of 0.5", INVALID)],
            id="multipleOf/double",
        ),
        pytest.param({"type": "number", "multipleOf": 0.1}, 0.3, [], id="multipleOf/double within rounding"),
        pytest.param(
            {"type": "integer", "format": "int32"},
            2**40,
            [],
            id="format int32 is not checked (the server drops it)",
        ),
        # strings
        pytest.param(
            {"type": "string", "minLength": 3},
            "ab",
            [("spec.x", 'Invalid value: "ab": spec.x in body should be at least 3 chars long', INVALID)],
            id="minLength",
        ),
        pytest.param(
            {"type": "string", "maxLength": 3},
            "abcd",
            [("spec.x", "Too long: may not be more than 3 bytes", TOO_LONG)],
            id="maxLength",
        ),
        pytest.param(
            {"type": "string", "maxLength": 1},
            "ab",
            [("spec.x", "Too long: may not be more than 1 byte", TOO_LONG)],
            id="maxLength/1",
        ),
        pytest.param({"type": "string", "maxLength": 3}, "héé", [], id="maxLength counts characters"),
        pytest.param(
            {"type": "string", "pattern": "^[a-z]+$"},
            "ABC",
            [("spec.x", "Invalid value: \"ABC\": spec.x in body should match '^[a-z]+$'", INVALID)],
            id="pattern",
        ),
        pytest.param({"type": "string", "pattern": "[0-9]"}, "web-1", [], id="pattern is a search"),
        pytest.param(
            {"type": "string", "pattern": "^[a-z]+$"},
            "abc\n",
            [("spec.x", "Invalid value: \"abc\\n\": spec.x in body should match '^[a-z]+$'", INVALID)],
            id="pattern $ is the very end, as in RE2",
        ),
        pytest.param(
            {"type": "string", "maxLength": 2, "pattern": "^[a-z]+$"},
            "ABC",
            [("spec.x", "Too long: may not be more than 2 bytes", TOO_LONG)],
            id="only the first string error is reported",
        ),
        pytest.param(
            {"type": "string", "pattern": "\\d"},
            "٣",
            [("spec.x", "Invalid value: \"٣\": spec.x in body should match '\\d'", INVALID)],
            id="pattern \\d is ASCII as in RE2",
        ),
        pytest.param(
            {"type": "string"},
            'quote " and \n newline',
            [],
            id="any string is a string",
        ),
        # formats
        pytest.param(
            {"type": "string", "format": "date-time"},
            "yesterday",
            [
                (
                    "spec.x",
                    'Invalid value: "yesterday": spec.x in body must be of type date-time: "yesterday"',
                    TYPE,
                )
            ],
            id="date-time/bad",
        ),
        pytest.param(
            {"type": "string", "format": "date-time"}, "2024-01-02T03:04:05Z", [], id="date-time/good"
        ),
        pytest.param(
            {"type": "string", "format": "date-time"},
            "2024-01-02T03:04:05.123+01:00",
            [],
            id="date-time/offset",
        ),
        pytest.param(
            {"type": "string", "format": "date"},
            "2024-13-01",
            [
                (
                    "spec.x",
                    'Invalid value: "2024-13-01": spec.x in body must be of type date: "2024-13-01"',
                    TYPE,
                )
            ],
            id="date/bad",
        ),
        pytest.param(
            {"type": "string", "format": "uuid"},
            "not-a-uuid",
            [
                (
                    "spec.x",
                    'Invalid value: "not-a-uuid": spec.x in body must be of type uuid: "not-a-uuid"',
                    TYPE,
                )
            ],
            id="uuid/bad",
        ),
        pytest.param(
            {"type": "string", "format": "uuid"}, "123e4567-e89b-12d3-a456-426614174000", [], id="uuid"
        ),
        pytest.param(
            {"type": "string", "format": "byte"},
            "not base64!",
            [
                (
                    "spec.x",
                    'Invalid value: "not base64!": spec.x in body must be of type byte: "not base64!"',
                    TYPE,
                )
            ],
            id="byte/bad",
        ),
        pytest.param({"type": "string", "format": "byte"}, "aGVsbG8=", [], id="byte"),
        pytest.param(
            {"type": "string", "format": "ipv4"},
            "1.2.3",
            [("spec.x", 'Invalid value: "1.2.3": spec.x in body must be of type ipv4: "1.2.3"', TYPE)],
            id="ipv4/bad",
        ),
        pytest.param({"type": "string", "format": "ipv6"}, "fe80::1", [], id="ipv6"),
        pytest.param({"type": "string", "format": "cidr"}, "10.0.0.0/8", [], id="cidr"),
        pytest.param({"type": "string", "format": "made-up"}, "anything", [], id="unknown format is ignored"),
        pytest.param(
            {"type": "string", "format": "date-time"},
            5,
            [("spec.x", 'Invalid value: "int64": spec.x in body must be of type date-time: "int64"', TYPE)],
            id="format on a wrong type names the format",
        ),
        # arrays
        pytest.param(
            {"type": "array", "minItems": 1},
            [],
            [("spec.x", "Invalid value: 0: spec.x in body should have at least 1 items", INVALID)],
            id="minItems",
        ),
        pytest.param(
            {"type": "array", "maxItems": 2},
            [1, 2, 3],
            [("spec.x", "Too many: 3: must have at most 2 items", TOO_MANY)],
            id="maxItems",
        ),
        pytest.param(
            {"type": "array", "uniqueItems": True},
            [1, 2, 1],
            [("spec.x", 'Invalid value: "": spec.x in body shouldn\'t contain duplicates', INVALID)],
            id="uniqueItems",
        ),
        pytest.param(
            {"type": "array", "uniqueItems": True}, [1, 1.5, True, "1"], [], id="uniqueItems/types differ"
        ),
        pytest.param(
            {"type": "array", "items": {"type": "integer"}},
            [1, "a", 3, None],
            [
                (
                    "spec.x[1]",
                    'Invalid value: "string": spec.x[1] in body must be of type integer: "string"',
                    TYPE,
                ),
                (
                    "spec.x[3]",
                    'Invalid value: "null": spec.x[3] in body must be of type integer: "null"',
                    TYPE,
                ),
            ],
            id="items are validated at their index",
        ),
        pytest.param(
            {"type": "array", "minItems": 3, "items": {"type": "integer", "minimum": 1}},
            [0],
            [
                (
                    "spec.x[0]",
                    "Invalid value: 0: spec.x[0] in body should be greater than or equal to 1",
                    INVALID,
                ),
                ("spec.x", "Invalid value: 1: spec.x in body should have at least 3 items", INVALID),
            ],
            id="items before the list's own checks",
        ),
        # objects
        pytest.param(
            {"type": "object", "minProperties": 1},
            {},
            [("spec.x", "Invalid value: 0: spec.x in body should have at least 1 properties", INVALID)],
            id="minProperties",
        ),
        pytest.param(
            {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "integer"}},
            {"a": 1, "b": "wrong type, not checked"},
            [("spec.x", "Too many: 2: must have at most 1 items", TOO_MANY)],
            id="maxProperties stops the object's checks",
        ),
        pytest.param(
            {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "string"}}},
            {},
            [("spec.x.a", "Required value", REQUIRED), ("spec.x.b", "Required value", REQUIRED)],
            id="required",
        ),
        pytest.param(
            {"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "nullable": True}}},
            {"a": None},
            [],
            id="required is met by a null",
        ),
        pytest.param(
            {"type": "object", "additionalProperties": {"type": "string"}},
            {"k": 1},
            [
                (
                    "spec.x.k",
                    'Invalid value: "integer": spec.x.k in body must be of type string: "integer"',
                    TYPE,
                )
            ],
            id="additionalProperties schema",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            {"a": 1, "b": 2},
            [("spec.x", 'Invalid value: "b": spec.x.b in body is a forbidden property', INVALID)],
            id="additionalProperties false",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {"o": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            },
            {"o": {"n": "x"}},
            [
                (
                    "spec.x.o.n",
                    'Invalid value: "string": spec.x.o.n in body must be of type integer: "string"',
                    TYPE,
                )
            ],
            id="nested path",
        ),
        # composition
        pytest.param(
            {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
            9,
            [
                ("spec.x", "Invalid value: 9: spec.x in body should be less than or equal to 5", INVALID),
                ("<nil>", 'Invalid value: "": "spec.x" must validate all the schemas (allOf)', INVALID),
            ],
            id="allOf",
        ),
        pytest.param(
            {"type": "integer", "oneOf": [{"minimum": 1}, {"minimum": 2}]},
            5,
            [
                (
                    "<nil>",
                    'Invalid value: "": "spec.x" must validate one and only one schema (oneOf). '
                    "Found 2 valid alternatives",
                    INVALID,
                )
            ],
            id="oneOf",
        ),
        pytest.param(
            {"type": "string", "not": {"enum": ["forbidden"]}},
            "forbidden",
            [("<nil>", 'Invalid value: "": "spec.x" must not validate the schema (not)', INVALID)],
            id="not",
        ),
    ],
)
def test_openapi_keywords(schema: dict[str, Any], value: Any, expected: Found) -> None:
    assert found({"spec": {"x": value}}, spec_schema({"x": schema})) == expected


def test_type_errors_of_the_autoscaler() -> None:
    obj = resource({"image": "", "port": "http", "autoscaling": {"maxReplicas": 0, "enabled": "yes"}})
    assert admit(obj, AUTOSCALER)[1] == [
        Cause("spec.image", 'Invalid value: "": spec.image in body should be at least 1 chars long'),
        Cause(
            "spec.port", 'Invalid value: "string": spec.port in body must be of type integer: "string"', TYPE
        ),
        Cause(
            "spec.autoscaling.enabled",
            'Invalid value: "string": spec.autoscaling.enabled in body must be of type boolean: "string"',
            TYPE,
        ),
        Cause(
            "spec.autoscaling.maxReplicas",
            "Invalid value: 0: spec.autoscaling.maxReplicas in body should be greater than or equal to 1",
        ),
        Cause(*BLOCKED),
    ]


def test_required_spec_at_the_root() -> None:
    schema = {"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object"}}}
    assert found(resource(None) | {"spec": {}}, schema) == []
    obj = {"apiVersion": "v", "kind": "K", "metadata": {}}
    assert found(obj, schema) == [("spec", "Required value", REQUIRED)]


def test_root_metadata_is_not_validated_by_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"metadata": {"type": "object", "properties": {"name": {"maxLength": 2}}}},
    }
    assert found({"metadata": {"name": "much-too-long"}}, schema) == []


def test_a_subtree_is_named_by_its_path() -> None:
    spec = AUTOSCALER["properties"]["spec"]
    assert found({"image": "x", "port": 0}, spec, path="spec") == [
        ("spec.port", "Invalid value: 0: spec.port in body should be greater than or equal to 1", INVALID)
    ]


# --- list types and embedded resources ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        pytest.param(
            {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            ["a", "b", "a", "a"],
            [("spec.x[2]", 'Duplicate value: "a"', DUPLICATE)],
            id="set/the second appearance only",
        ),
        pytest.param(
            {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "number"}},
            [1, 1.0, 2, 2],
            [("spec.x[3]", "Duplicate value: 2", DUPLICATE)],
            id="set/1 and 1.0 differ as Go values",
        ),
        pytest.param(
            {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}},
            ["a", "a"],
            [],
            id="atomic lists may repeat",
        ),
        pytest.param(
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
                },
            },
            [{"name": "a", "v": 1}, {"name": "b"}, {"name": "a", "v": 2}],
            [("spec.x[2]", 'Duplicate value: map[string]interface {}{"name":"a"}', DUPLICATE)],
            id="map/one key",
        ),
        pytest.param(
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
                },
            },
            [{"v": 1}, {"v": 2}],
            [("spec.x[1]", "Duplicate value: map[string]interface {}{}", DUPLICATE)],
            id="map/a missing key is a key too",
        ),
        pytest.param(
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {
                    "type": "object",
                    "properties": {"port": {"type": "integer"}, "protocol": {"type": "string"}},
                },
            },
            [
                {"port": 80, "protocol": "TCP"},
                {"port": 80, "protocol": "UDP"},
                {"port": 80, "protocol": "TCP"},
            ],
            [
                (
                    "spec.x[2]",
                    'Duplicate value: map[string]interface {}{"port":80, "protocol":"TCP"}',
                    DUPLICATE,
                )
            ],
            id="map/two keys",
        ),
    ],
)
def test_list_types(schema: dict[str, Any], value: Any, expected: Found) -> None:
    assert found({"spec": {"x": value}}, spec_schema({"x": schema})) == expected


def test_list_types_are_checked_inside_maps() -> None:
    schema = spec_schema(
        {
            "m": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "integer"},
                },
            }
        }
    )
    assert found({"spec": {"m": {"k": [1, 1]}}}, schema) == [
        ("spec.m[k][1]", "Duplicate value: 1", DUPLICATE)
    ]


EMBEDDED = spec_schema({"e": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {}}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"apiVersion": "v1", "kind": "Pod"}, [], id="complete"),
        pytest.param(
            {},
            [("spec.e.apiVersion", "Required value", REQUIRED), ("spec.e.kind", "Required value", REQUIRED)],
            id="missing apiVersion and kind",
        ),
        pytest.param(
            {"apiVersion": "", "kind": 5},
            [
                ("spec.e.apiVersion", 'Invalid value: "": must not be empty', INVALID),
                ("spec.e.kind", "Invalid value: 5: must be a string", INVALID),
            ],
            id="empty and not a string",
        ),
        pytest.param(
            {"apiVersion": "a/b/c", "kind": "Pod"},
            [("spec.e.apiVersion", 'Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c', INVALID)],
            id="bad group version",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "My_Kind"},
            [
                (
                    "spec.e.kind",
                    'Invalid value: "My_Kind": may have mixed case, but should otherwise match: '
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                    "start with an alphabetic character, and end with an alphanumeric character "
                    "(e.g. 'my-name',  or 'abc-123', "
                    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                    INVALID,
                )
            ],
            id="kind not a DNS-1035 label",
        ),
    ],
)
def test_embedded_resources(value: Any, expected: Found) -> None:
    assert found({"spec": {"e": value}}, EMBEDDED) == expected


# --- CEL rules -----------------------------------------------------------------------------------------


def with_rules(*rules: dict[str, Any], **props: Any) -> dict[str, Any]:
    schema = spec_schema(
        {
            "minReplicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "target": {"type": "number"},
            "name": {"type": "string"},
            **props,
        }
    )
    schema["properties"]["spec"]["x-kubernetes-validations"] = list(rules)
    return schema


MIN_MAX = {"rule": "self.minReplicas <= self.maxReplicas"}


@pytest.mark.parametrize(
    ("rule", "spec", "expected"),
    [
        pytest.param(MIN_MAX, {"minReplicas": 1, "maxReplicas": 3}, [], id="passes"),
        pytest.param(
            MIN_MAX,
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Invalid value: "object": failed rule: self.minReplicas <= self.maxReplicas', INVALID)],
            id="fails with the default message",
        ),
        pytest.param(
            MIN_MAX | {"message": "  minReplicas must not exceed maxReplicas "},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Invalid value: "object": minReplicas must not exceed maxReplicas', INVALID)],
            id="message, trimmed",
        ),
        pytest.param(
            MIN_MAX
            | {
                "messageExpression": "'min ' + string(self.minReplicas) + "
                "' > max ' + string(self.maxReplicas)"
            },
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Invalid value: "object": min 5 > max 3', INVALID)],
            id="messageExpression",
        ),
        pytest.param(
            MIN_MAX | {"message": "static", "messageExpression": "self.nope"},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Invalid value: "object": static', INVALID)],
            id="a failing messageExpression falls back to the message",
        ),
        pytest.param(
            MIN_MAX | {"messageExpression": "'  '"},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Invalid value: "object": failed rule: self.minReplicas <= self.maxReplicas', INVALID)],
            id="an empty messageExpression falls back too",
        ),
        pytest.param(
            MIN_MAX | {"fieldPath": ".minReplicas"},
            {"minReplicas": 5, "maxReplicas": 3},
            [
                (
                    "spec.minReplicas",
                    'Invalid value: "object": failed rule: self.minReplicas <= self.maxReplicas',
                    INVALID,
                )
            ],
            id="fieldPath",
        ),
        pytest.param(
            MIN_MAX | {"reason": "FieldValueForbidden", "message": "no"},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", "Forbidden: no", FORBIDDEN)],
            id="reason Forbidden",
        ),
        pytest.param(
            MIN_MAX | {"reason": "FieldValueRequired", "message": "set both"},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", "Required value: set both", REQUIRED)],
            id="reason Required",
        ),
        pytest.param(
            MIN_MAX | {"reason": "FieldValueDuplicate"},
            {"minReplicas": 5, "maxReplicas": 3},
            [("spec", 'Duplicate value: "object"', DUPLICATE)],
            id="reason Duplicate",
        ),
        pytest.param(
            MIN_MAX,
            {"maxReplicas": 3},
            [
                (
                    "spec",
                    'Invalid value: "object": no such key: minReplicas evaluating rule: '
                    "self.minReplicas <= self.maxReplicas",
                    INVALID,
                )
            ],
            id="an absent field is an evaluation error",
        ),
        pytest.param(
            MIN_MAX | {"message": "bad range", "fieldPath": ".minReplicas"},
            {"maxReplicas": 3},
            [
                (
                    "spec",
                    'Invalid value: "object": no such key: minReplicas evaluating rule: bad range',
                    INVALID,
                )
            ],
            id="an evaluation error names the rule by its message, at the node",
        ),
        pytest.param(
            {"rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas"},
            {"maxReplicas": 3},
            [],
            id="has guards an optional field",
        ),
        pytest.param(
            {"rule": "self.target == 1.0 && self.target / 2.0 == 0.5"},
            {"target": 1},
            [],
            id="a number field's integer is a double",
        ),
        pytest.param(
            {"rule": "self.minReplicas / 2 == 1"},
            {"minReplicas": 3},
            [],
            id="an integer field divides as an int",
        ),
        pytest.param(
            {"rule": "self.name + 1 == 'x'"},
            {"name": "x"},
            [
                (
                    "spec",
                    "Invalid value: \"object\": 'no such overload': call arguments did not match a supported "
                    "operator, function or macro signature for rule: self.name + 1 == 'x'",
                    INVALID,
                )
            ],
            id="a runtime type error",
        ),
        pytest.param(
            {"rule": "1 / 0 == 0"},
            {},
            [("spec", 'Invalid value: "object": division by zero evaluating rule: 1 / 0 == 0', INVALID)],
            id="division by zero",
        ),
        pytest.param(
            {"rule": "self.size()"},
            {},
            [("spec", 'Invalid value: "object": failed rule: self.size()', INVALID)],
            id="a rule that is not a bool fails",
        ),
    ],
)
def test_rules(rule: dict[str, Any], spec: dict[str, Any], expected: Found) -> None:
    assert found({"spec": spec}, with_rules(rule)) == expected


def test_min_max_rule_of_the_autoscaler() -> None:
    obj = resource({"image": "srv", "autoscaling": {"minReplicas": 9, "maxReplicas": 3}})
    assert admit(obj, AUTOSCALER)[1] == [
        Cause("spec.autoscaling", 'Invalid value: "object": minReplicas must not exceed maxReplicas')
    ]
    # the defaults take part: minReplicas 9 against the default maxReplicas 8
    assert admit(resource({"image": "srv", "autoscaling": {"minReplicas": 9}}), AUTOSCALER)[1] == [
        Cause("spec.autoscaling", 'Invalid value: "object": minReplicas must not exceed maxReplicas')
    ]


def test_rules_are_skipped_behind_a_blocking_error() -> None:
    schema = with_rules(MIN_MAX)
    assert found({"spec": {"minReplicas": "5", "maxReplicas": 3}}, schema) == [
        (
            "spec.minReplicas",
            'Invalid value: "string": spec.minReplicas in body must be of type integer: "string"',
            TYPE,
        ),
        BLOCKED,
    ]


def test_rules_still_run_beside_a_bound_error() -> None:
    schema = with_rules(MIN_MAX, minReplicas={"type": "integer", "maximum": 2})
    assert found({"spec": {"minReplicas": 5, "maxReplicas": 3}}, schema) == [
        (
            "spec.minReplicas",
            "Invalid value: 5: spec.minReplicas in body should be less than or equal to 2",
            INVALID,
        ),
        ("spec", 'Invalid value: "object": failed rule: self.minReplicas <= self.maxReplicas', INVALID),
    ]


@pytest.mark.parametrize(
    ("schema", "obj", "expected"),
    [
        pytest.param(
            {"type": "object", "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('a')"}]},
            {"metadata": {"name": "bee"}},
            [
                (
                    "<nil>",
                    "Invalid value: \"object\": failed rule: self.metadata.name.startsWith('a')",
                    INVALID,
                )
            ],
            id="a rule on the root is reported at <nil>",
        ),
        pytest.param(
            {"type": "object", "x-kubernetes-validations": [{"rule": "!has(self.metadata.labels)"}]},
            {"metadata": {"name": "n", "labels": {"a": "b"}}},
            [],
            id="a rule sees only the name and generateName of the root's metadata",
        ),
        pytest.param(
            spec_schema(
                {"s": {"type": "string", "x-kubernetes-validations": [{"rule": "self == self.lowerCase"}]}}
            ),
            {"spec": {}},
            [],
            id="rules of an absent field do not run",
        ),
        pytest.param(
            spec_schema(
                {
                    "s": {
                        "type": "string",
                        "nullable": True,
                        "x-kubernetes-validations": [{"rule": "self.size() > 1"}],
                    }
                }
            ),
            {"spec": {"s": None}},
            [],
            id="rules of a null value do not run",
        ),
        pytest.param(
            spec_schema({"s": {"type": "string", "x-kubernetes-validations": [{"rule": "self.size() > 1"}]}}),
            {"spec": {"s": "a"}},
            [("spec.s", 'Invalid value: "string": failed rule: self.size() > 1', INVALID)],
            id="a rule on a string",
        ),
        pytest.param(
            spec_schema(
                {
                    "l": {
                        "type": "array",
                        "items": {"type": "integer", "x-kubernetes-validations": [{"rule": "self % 2 == 0"}]},
                    }
                }
            ),
            {"spec": {"l": [2, 3, 4, 5]}},
            [
                ("spec.l[1]", 'Invalid value: "integer": failed rule: self % 2 == 0', INVALID),
                ("spec.l[3]", 'Invalid value: "integer": failed rule: self % 2 == 0', INVALID),
            ],
            id="rules on list items",
        ),
        pytest.param(
            spec_schema(
                {
                    "m": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "string",
                            "x-kubernetes-validations": [{"rule": "self != ''"}],
                        },
                    }
                }
            ),
            {"spec": {"m": {"ok": "x", "bad": ""}}},
            [("spec.m[bad]", "Invalid value: \"string\": failed rule: self != ''", INVALID)],
            id="rules on map values",
        ),
        pytest.param(
            spec_schema(
                {
                    "p": {
                        "x-kubernetes-int-or-string": True,
                        "x-kubernetes-validations": [{"rule": "self > 0"}],
                    }
                }
            ),
            {"spec": {"p": "80"}},
            [
                (
                    "spec.p",
                    "Invalid value: \"\": 'no such overload': call arguments did not match a supported "
                    "operator, function or macro signature for rule: self > 0",
                    INVALID,
                )
            ],
            id="int-or-string is dynamic, so its type errors show at run time",
        ),
        pytest.param(
            spec_schema(
                {
                    "m": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "x-kubernetes-validations": [
                            {"rule": "self.all(k, k.startsWith('x-'))", "fieldPath": "['bad']"}
                        ],
                    }
                }
            ),
            {"spec": {"m": {"x-a": "", "bad": ""}}},
            [
                (
                    "spec.m.[bad]",
                    "Invalid value: \"object\": failed rule: self.all(k, k.startsWith('x-'))",
                    INVALID,
                )
            ],
            id="a fieldPath naming a map key",
        ),
        pytest.param(
            spec_schema(
                {
                    "o": {
                        "type": "object",
                        "properties": {"a": {"type": "integer"}},
                        "allOf": [{"x-kubernetes-validations": [{"rule": "self.a > 1"}]}],
                    }
                }
            ),
            {"spec": {"o": {"a": 1}}},
            [("spec.o", 'Invalid value: "object": failed rule: self.a > 1', INVALID)],
            id="rules inside allOf",
        ),
    ],
)
def test_rule_placement(schema: dict[str, Any], obj: Any, expected: Found) -> None:
    assert found(obj, schema) == expected


IMMUTABLE = spec_schema(
    {
        "name": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}],
        },
        "replicas": {"type": "integer", "maximum": 8},
        "label": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self.size() <= 3", "message": "too long"}],
        },
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "port": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "may only grow"}],
                    },
                },
            },
        },
    },
    **{"x-kubernetes-validations": [{"rule": "self.replicas > 0", "message": "need a replica"}]},
)


def test_transition_rules_run_only_on_update() -> None:
    new = {"spec": {"name": "b", "replicas": 1}}
    assert found(new, IMMUTABLE) == []
    assert found(new, IMMUTABLE, old={"spec": {"name": "a", "replicas": 1}}) == [
        ("spec.name", 'Invalid value: "string": is immutable', INVALID)
    ]
    assert found(new, IMMUTABLE, old={"spec": {"name": "b", "replicas": 2}}) == []
    assert found(new, IMMUTABLE, old={"spec": {"replicas": 1}}) == [], "no old name to compare with"


def test_transition_rules_follow_list_map_keys() -> None:
    old = {"spec": {"replicas": 1, "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}]}}
    new = {"spec": {"replicas": 1, "ports": [{"name": "grpc", "port": 91}, {"name": "http", "port": 79}]}}
    assert found(new, IMMUTABLE, old=old) == [
        ("spec.ports[1].port", 'Invalid value: "integer": may only grow', INVALID)
    ]
    new_port = {"spec": {"replicas": 1, "ports": [{"name": "new", "port": 1}]}}
    assert found(new_port, IMMUTABLE, old=old) == [], "a new element has no old value"


def test_update_ratchets_unchanged_errors() -> None:
    # A value invalid in the stored object may stay on update; a change to it is checked.
    old = {
        "spec": {
            "replicas": 9,
            "name": "a",
            "label": "toolong",
            "ports": [{"name": "p", "port": 1}, {"name": "p", "port": 1}],
        }
    }
    assert found(old, IMMUTABLE) == [
        (
            "spec.replicas",
            "Invalid value: 9: spec.replicas in body should be less than or equal to 8",
            INVALID,
        ),
        ("spec.ports[1]", 'Duplicate value: map[string]interface {}{"name":"p"}', DUPLICATE),
        ("spec.label", 'Invalid value: "string": too long', INVALID),
    ]
    renamed = copy.deepcopy(old)
    renamed["spec"]["name"] = "b"
    assert found(renamed, IMMUTABLE, old=old) == [
        ("spec.name", 'Invalid value: "string": is immutable', INVALID)
    ]
    grown = copy.deepcopy(old)
    grown["spec"]["replicas"] = 10
    grown["spec"]["label"] = "longer"
    assert found(grown, IMMUTABLE, old=old) == [
        (
            "spec.replicas",
            "Invalid value: 10: spec.replicas in body should be less than or equal to 8",
            INVALID,
        ),
        ("spec.label", 'Invalid value: "string": too long', INVALID),
    ]


def test_a_changed_object_rechecks_its_own_rules() -> None:
    old = {"spec": {"replicas": 0, "name": "a"}}
    assert found({"spec": {"replicas": 0, "name": "a", "label": "x"}}, IMMUTABLE, old=old) == [
        ("spec", 'Invalid value: "object": need a replica', INVALID)
    ]
    assert found(old, IMMUTABLE, old=old) == []


def test_a_rule_that_cannot_be_compiled_is_never_passed() -> None:
    with pytest.raises(UnsupportedRule, match="optional field selection"):
        validate({"spec": {}}, with_rules({"rule": "self.?minReplicas.orValue(1) > 0"}))
    with pytest.raises(CelSyntaxError, match="undeclared reference to 'spec'"):
        validate({"spec": {}}, with_rules({"rule": "spec.minReplicas > 0"}))
    with pytest.raises(UnsupportedRule, match="optionalOldSelf makes oldSelf a CEL optional"):
        validate({"spec": {}}, with_rules({"rule": "true", "optionalOldSelf": True}))
    with pytest.raises(CelSyntaxError, match=r"fieldPath '\.nope' does not refer to a valid field"):
        validate({"spec": {"minReplicas": 2, "maxReplicas": 1}}, with_rules(MIN_MAX | {"fieldPath": ".nope"}))
    with pytest.raises(UnsupportedRule, match="cannot be evaluated"):
        validate({"spec": {"x": "a"}}, spec_schema({"x": {"type": "string", "pattern": "\\p{Lu}"}}))


# --- registration --------------------------------------------------------------------------------------


def test_check_rules_lists_the_rules_that_do_not_compile() -> None:
    schema = spec_schema(
        {
            "a": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "self.lowerAscii() == self"},
                    {"rule": "self.size() > 0", "messageExpression": "'bad: ' + self.?x"},
                ],
            },
            "b": {
                "type": "array",
                "items": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >"}]},
            },
        },
        **{"x-kubernetes-validations": [MIN_MAX]},
    )
    assert check_rules(schema) == ["self.lowerAscii() == self", "'bad: ' + self.?x", "self >"]
    transition = with_rules({"rule": "self.minReplicas >= oldSelf.minReplicas", "optionalOldSelf": True})
    assert check_rules(transition) == ["self.minReplicas >= oldSelf.minReplicas"]
    assert check_rules(AUTOSCALER) == []


def test_rule_problems_say_where_and_why() -> None:
    schema = spec_schema(
        {
            "a": {
                "type": "string",
                "pattern": "\\p{Lu}",
                "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self"}],
            },
            "l": {
                "type": "array",
                "items": {"type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]},
            },
        },
        **{
            "x-kubernetes-validations": [
                MIN_MAX | {"reason": "Nope", "fieldPath": ".missing"},
                {"rule": "self >"},
            ]
        },
    )
    spec = "openAPIV3Schema.properties[spec]"
    assert rule_problems(schema) == [
        f'{spec}.x-kubernetes-validations[0].reason: Unsupported value: "Nope": supported values: '
        '"FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"',
        f"{spec}.x-kubernetes-validations[0].fieldPath: fieldPath '.missing' does not refer to a valid field",
        f"{spec}.x-kubernetes-validations[1].rule: compilation failed: <input>:1:7: "
        "Syntax error: unexpected end of input",
        f"{spec}.properties[a].pattern: pattern '\\\\p{{Lu}}' cannot be evaluated: error parsing regexp: "
        "RE2 syntax without a Python equivalent here: '\\\\p{Lu}'",
        f"{spec}.properties[a].x-kubernetes-validations[0].rule: unsupported by this test server: "
        "<input>:1:6: function 'lowerAscii' is not supported",
        f"{spec}.properties[l].items.x-kubernetes-validations[0].rule: oldSelf cannot be used on the "
        f"uncorrelatable portion of the schema within {spec}.properties[l].items",
    ]
    assert rule_problems(AUTOSCALER) == []


# --- purity and admit ----------------------------------------------------------------------------------


def test_inputs_are_not_changed() -> None:
    obj = resource(
        {"image": "srv", "typo": 1, "autoscaling": {"minReplicas": None}, "template": {"a": [1]}},
        status={"conditions": [{"type": "Ready", "status": "True", "x": 1}]},
    )
    schema = copy.deepcopy(AUTOSCALER)
    obj_before, schema_before = copy.deepcopy(obj), copy.deepcopy(schema)
    pruned = prune(obj, schema)
    defaulted = apply_defaults(pruned, schema)
    pruned_before = copy.deepcopy(pruned)
    validate(defaulted, schema, old=obj)
    result, _ = admit(obj, schema)
    assert obj == obj_before
    assert schema == schema_before
    assert pruned == pruned_before
    result["spec"]["template"]["a"].append(2)
    result["spec"]["autoscaling"]["enabled"] = False
    assert obj == obj_before, "the result shares nothing with the input"
    assert AUTOSCALER["properties"]["spec"]["properties"]["autoscaling"]["default"] == {}


def test_admit_prunes_defaults_and_validates_an_update() -> None:
    stored, causes = admit(resource({"image": "srv"}), AUTOSCALER)
    assert causes == []
    changed = copy.deepcopy(stored)
    changed["spec"]["autoscaling"]["minReplicas"] = 20
    changed["spec"]["unknown"] = True
    result, causes = admit(changed, AUTOSCALER, old=stored)
    assert "unknown" not in result["spec"]
    assert causes == [
        Cause("spec.autoscaling", 'Invalid value: "object": minReplicas must not exceed maxReplicas')
    ]


# --- properties ------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
autoscaling_values = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans() | json_values,
        "minReplicas": st.integers(-2, 12) | json_values,
        "maxReplicas": st.integers(-2, 12) | json_values,
        "targetPerReplica": st.floats(-1, 3, allow_nan=False) | json_values,
        "junk": json_values,
    },
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "image": st.text(max_size=3) | json_values,
        "port": st.integers(-1, 70000) | json_values,
        "replicas": json_values,
        "autoscaling": autoscaling_values | json_values,
        "template": json_values,
        "junk": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(specs, json_values)
def test_admit_is_idempotent(spec: dict[str, Any], status: Any) -> None:
    obj = resource(spec, status=status)
    first, causes = admit(obj, AUTOSCALER)
    second, causes_again = admit(first, AUTOSCALER)
    assert second == first
    assert causes_again == causes
    assert set(first["spec"]) <= set(AUTOSCALER["properties"]["spec"]["properties"])


@settings(max_examples=200, deadline=None)
@given(specs)
def test_a_valid_update_to_itself_is_valid(spec: dict[str, Any]) -> None:
    stored, causes = admit(resource(spec), AUTOSCALER)
    if causes:
        return
    assert admit(stored, AUTOSCALER, old=stored)[1] == []
