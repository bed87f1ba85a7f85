"""values.yaml, the chart README's values table and values.schema.json kept in step."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.chart.helm import CHART

README = CHART / "README.md"
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \|")


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key path to a value that is not a non-empty map (an empty map or a list is a value)."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def values_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def readme_rows(text: str) -> dict[str, str]:
    """key → default as written (JSON inside backticks) for each row of the README's values table."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            key, default = match.groups()
            assert key not in rows, f"{key} twice in the README's values table"
            rows[key] = default
    return rows


def out_of_step(values: dict[str, Any], text: str) -> list[str]:
    rows = readme_rows(text)
    expected = {key: json.dumps(value) for key, value in leaves(values)}
    problems = [f"{key}: not in the README's values table" for key in expected.keys() - rows.keys()]
    problems += [f"{key}: in the README, not in values.yaml" for key in rows.keys() - expected.keys()]
    problems += [
        f"{key}: README says {rows[key]}, values.yaml {expected[key]}"
        for key in expected.keys() & rows.keys()
        if json.loads(rows[key]) != json.loads(expected[key])
    ]
    return sorted(problems)


def test_the_readme_values_table_matches_values_yaml() -> None:
    values = values_yaml()
    assert len(list(leaves(values))) > 30
    assert out_of_step(values, README.read_text()) == []


def test_the_values_check_sees_each_kind_of_drift() -> None:
    text = README.read_text()
    values = values_yaml()
    values["metrics"]["port"] = 9090
    values["newKey"] = {"enabled": False}
    text = text.replace("| `verbose` | `false` |", "| `verbose` | `true` |")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("| `liveness.port`"))
    text += "\n| `removedKey` | `1` | gone |\n"
    assert out_of_step(values, text) == [
        "liveness.port: not in the README's values table",
        "metrics.port: README says 8080, values.yaml 9090",
        "newKey.enabled: not in the README's values table",
        "removedKey: in the README, not in values.yaml",
        "verbose: README says true, values.yaml false",
    ]


def test_the_schema_knows_every_value_and_only_those() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = values_yaml()
    # `global`: what a parent chart hands every subchart, allowed so that gpuscale can be one.
    assert set(schema["properties"]) == set(values) | {"global"}
    assert schema["additionalProperties"] is False

    def declared(node: dict[str, Any], value: Any, path: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        if isinstance(value, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: takes unknown keys"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key}: not in the schema"
                declared(node["properties"][key], child, f"{path}.{key}")

    declared(schema, values, "values")
