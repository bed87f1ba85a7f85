"""The GpuInferenceService CRD: generated from spec.py, accepted and served by an API server, and in
agreement with spec.py on what a cluster admits and how it fills in defaults."""

from __future__ import annotations

import itertools
import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import annotated_types
import kubernetes_validate
import pytest
import yaml
from gpuscale.crd import CRD_NAME, PLURAL, SHORT_NAME, VERSION, build_crd, crd_yaml
from gpuscale.spec import API_GROUP, API_VERSION, KIND, ManifestError, ServiceSpec, parse_service
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kube_test_server.errors import ApiError, Cause
from kube_test_server.schema import admit, prune, rule_problems
from kube_test_server.server import KubeTestServer

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / f"{CRD_NAME}.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
PRINTER_COLUMNS = ["Ready", "Replicas", "Desired", "Queued", "Running", "Age"]  # `kubectl get`'s, after Name


def manifest(spec: Any, name: str = "sdxl") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def spec_accepts(obj: dict[str, Any]) -> bool:
    try:
        parse_service(obj)
    except ManifestError:
        return False
    return True


def messages(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


# --- the file and the object ---------------------------------------------------------------------------


def test_committed_yaml_is_generated_from_spec_py() -> None:
    fix = f"regenerate it: .venv/bin/python -m gpuscale.crd > crds/{CRD_NAME}.yaml"
    assert CRD_FILE.exists(), f"{CRD_FILE} is missing; {fix}"
    text = CRD_FILE.read_text()
    assert text == crd_yaml(), f"{CRD_FILE.name} differs from what spec.py gives; {fix}"
    assert yaml.safe_load(text) == build_crd()
    assert "python -m gpuscale.crd" in text.splitlines()[1]


def test_crd_names_and_subresources() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "gpuinferenceservices.gpuscale.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("gpuscale.io", "Namespaced")
    names = spec["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "GpuInferenceService",
        "gpuinferenceservices",
        ["gis"],
        ["all"],
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    assert [c["name"] for c in version["additionalPrinterColumns"]] == PRINTER_COLUMNS


def test_crd_is_a_valid_apiextensions_object() -> None:
    # The published OpenAPI of apiextensions.k8s.io/v1: misspelt keywords and wrong shapes fail here.
    kubernetes_validate.validate(build_crd(), "1.31", strict=True)


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", schema
    for name, prop in schema.get("properties", {}).items():
        yield from _nodes(prop, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def test_schema_is_structural() -> None:
    """The rules of a structural schema (apiextensions' structural.ValidateStructural) that matter
    here: the test server does not check them, and a real API server refuses a CRD that breaks one."""
    problems = []
    for path, node in _nodes(SCHEMA):
        if not node.get("type") and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        for keyword in ("$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "dependencies"):
            if keyword in node:
                problems.append(f"{path}: {keyword}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        if node.get("x-kubernetes-list-type") == "map":
            required, props = node["items"].get("required", []), node["items"]["properties"]
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in required and "default" not in props[key]:
                    problems.append(f"{path}: list map key {key} neither required nor defaulted")
    # Only a root-level metadata of type object, with nothing said inside it, is allowed.
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}
    assert problems == []


def test_defaults_are_valid_and_survive_pruning() -> None:
    # The real server refuses a CRD whose default would be pruned or fail its own node's schema.
    checked = 0
    for path, node in _nodes(SCHEMA):
        if "default" not in node:
            continue
        default = node["default"]
        body = {k: v for k, v in node.items() if k != "x-kubernetes-validations"}
        _, causes = admit({"v": default}, {"type": "object", "properties": {"v": body}})
        assert prune({"v": default}, {"type": "object", "properties": {"v": body}}) == {"v": default}, path
        assert causes == [], (path, messages(causes))
        checked += 1
    assert checked > 20


def test_every_rule_is_evaluated_by_the_test_server() -> None:
    assert rule_problems(SCHEMA) == []


def test_the_api_server_serves_it() -> None:
    with KubeTestServer() as kube:
        kube.apply(build_crd())
        crd = _get(kube, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions == {"NamesAccepted": "True", "Established": "True"}

        discovery = _get(kube, f"/apis/{API_GROUP}/{VERSION}")
        by_name = {r["name"]: r for r in discovery["resources"]}
        assert (by_name[PLURAL]["shortNames"], by_name[PLURAL]["namespaced"]) == ([SHORT_NAME], True)
        assert {f"{PLURAL}/status", f"{PLURAL}/scale"} <= set(by_name)

        (service,) = kube.apply(yaml.safe_load((ROOT / "examples" / "sleep.yaml").read_text()))
        assert service["spec"]["autoscaling"]["tickSeconds"] == 1.0  # defaulted by the server
        where = f"/apis/{API_GROUP}/{VERSION}/namespaces/default/{PLURAL}"
        scale = _get(kube, f"{where}/sleep/scale")
        assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 1)
        table = _get(kube, where, accept="application/json;as=Table;v=v1;g=meta.k8s.io")
        assert [c["name"] for c in table["columnDefinitions"]][1:] == PRINTER_COLUMNS

        # The root rule on metadata.name, end to end: the server itself would take 53 characters.
        with pytest.raises(ApiError) as refused:
            kube.apply(manifest({"image": "x"}, name="a" * 53))
        assert refused.value.code == 422
        assert "at most 52 characters" in str(refused.value.details)


def _get(kube: KubeTestServer, path: str, accept: str = "application/json") -> dict[str, Any]:
    request = urllib.request.Request(f"{kube.url}{path}", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.load(response)
    return body


# --- what a cluster does with manifests -------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_admitted_and_defaulted_as_spec_py_defaults_them(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    services = [d for d in documents if d.get("kind") == KIND]
    assert services, f"{path.name} holds no {KIND}"
    for document in services:
        admitted, causes = admit(document, SCHEMA)
        assert causes == [], messages(causes)
        # Whatever the server fills in is what spec.py would have assumed.
        assert parse_service(admitted) == parse_service(document)


def test_a_minimal_manifest_gets_every_default_of_spec_py() -> None:
    admitted, causes = admit(manifest({"image": "x"}), SCHEMA)
    assert causes == []
    expected = ServiceSpec(image="x").model_dump(mode="json", by_alias=True, exclude={"template"})
    assert {k: v for k, v in admitted["spec"].items() if k != "template"} == expected
    assert admitted["spec"]["template"] == {}  # env's default () is left out: the same as no list


def test_unknown_fields_are_pruned_not_rejected() -> None:
    """A cluster drops fields its schema does not know (`kubectl apply` may warn); spec.py, for the
    local backend, refuses them so a typo is seen. The pruned object is what the operator reads."""
    document = manifest(
        {
            "image": "x",
            "gpuPerReplica": 2,  # a typo of gpusPerReplica
            "autoscaling": {"maxReplica": 3},
            "template": {"nodeSelector": {"gpu": "a100"}, "env": [{"name": "A", "value": "1", "from": "x"}]},
        }
    )
    admitted, causes = admit(document, SCHEMA)
    assert causes == []
    assert "gpuPerReplica" not in admitted["spec"]
    assert "maxReplica" not in admitted["spec"]["autoscaling"]
    # The template passes the rest of a pod template through, but env items are ours and pruned.
    assert admitted["spec"]["template"] == {
        "nodeSelector": {"gpu": "a100"},
        "env": [{"name": "A", "value": "1"}],
    }
    assert not spec_accepts(document)
    assert parse_service(admitted).spec.gpus_per_replica == 1


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"minReplicas": 5, "maxReplicas": 4}, "minReplicas must not exceed maxReplicas"),
        ({"burstWindowSeconds": 61}, "burstWindowSeconds must not exceed stableWindowSeconds"),
        ({"tickSeconds": 0}, "must be at least 0.1"),
    ],
)
def test_cel_rules_say_what_is_wrong(autoscaling: dict[str, Any], message: str) -> None:
    _, causes = admit(manifest({"image": "x", "autoscaling": autoscaling}), SCHEMA)
    assert len(causes) == 1
    assert message in causes[0].message
    assert not spec_accepts(manifest({"image": "x", "autoscaling": autoscaling}))


@pytest.mark.parametrize(
    "name", ["sdxl", "a" * 52, "a" * 53, "a.b", "sdxl-2", "-a", "Sdxl", "a" * 63, "x" * 52 + ".y"]
)
def test_metadata_name_limits_match_spec_py(name: str) -> None:
    """A name becomes part of pod and Service names: spec.py wants a DNS-1123 label of at most 52
    characters, stricter than the subdomain the API server itself asks of a custom resource."""
    document = manifest({"image": "x"}, name=name)
    _, causes = admit(document, SCHEMA)
    assert (causes == []) == spec_accepts(document), messages(causes)


# --- the schema and spec.py accept the same specs ---------------------------------------------------
#
# Each example is a valid spec (random values within spec.py's bounds, so minReplicas > maxReplicas
# and burst > stable windows come up by themselves) with up to three fields then set to an edge:
# at or just beyond a bound, a wrong type, or a required field left out. Fields, bounds and types
# are read from spec.py's models, so a field added there is fuzzed too.
#
# Left out, each because a cluster and spec.py knowingly differ there (see the report on spec.py):
# - unknown keys: pruned by a cluster, refused by spec.py (test_unknown_fields_are_pruned_not_rejected);
# - null: a cluster drops it or applies the default, spec.py refuses None for a non-Optional field;
# - values pydantic's lax mode coerces and a cluster refuses: numeric strings ("8") and bools for
#   numbers, "true"/"yes"/0/1 for booleans;
# - floats within 1e-9 of an integer for integer fields (kube-openapi takes 2.0000000001 as the
#   integer 2, pydantic refuses it), and integers beyond int64 (a cluster reads them as floats).

WRONG_FOR_NUMBER = ["abc", "", [], {}, [1]]
WRONG_FOR_BOOL = ["abc", 2, 0.5, -1, [], {}]
WRONG_FOR_STR = [5, 0.5, True, [], {}]
WRONG_FOR_OBJECT = ["abc", 5, True, [], [{}]]
WRONG_FOR_LIST = ["abc", 5, {}, {"name": "A"}]
# Text that meets patterns like env names' and misses them by one character, newlines included
# (a Python `$` would match before a trailing newline; RE2's and Rust's do not).
TEXT = st.text(alphabet="aZ_.-0 \n\u00e9", max_size=4)
STRINGS = ["", "a", "a\n", "\na", "1a", "_a.b-c", "a b", "\u00e9", "-", "."]


class _Missing:
    """A required field left out (a sentinel with a stable repr, for test ids)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def _bounds(field: FieldInfo | None) -> tuple[float, float, list[float]]:
    """(low, high, values at and just beyond each bound), from the field's ge/gt/le/lt."""
    low, high, edges = -math.inf, math.inf, list[float]()
    integer = field is not None and field.annotation is int
    for m in field.metadata if field is not None else ():
        for attr, below in (("ge", True), ("gt", True), ("le", False), ("lt", False)):
            if not isinstance(m, getattr(annotated_types, attr.capitalize())):
                continue
            bound = getattr(m, attr)
            if below:
                low = bound
            else:
                high = bound
            outward = -math.inf if below else math.inf
            edges += [bound, bound + (-1 if below else 1) if integer else math.nextafter(bound, outward)]
            if not integer and not float(bound).is_integer():
                # An integer either side: kube-openapi compares an integer with a truncated bound.
                edges += [math.floor(bound), math.ceil(bound)]
    return low, high, edges


def _valid(annotation: Any, field: FieldInfo | None) -> st.SearchStrategy[Any]:
    low, high, _ = _bounds(field)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        ints = st.integers(int(max(low, -(2**40))), int(min(high, 2**40)))
        return ints | ints.map(float)  # 2.0 is an integer to both sides
    if annotation is float:
        low, high = max(low, -1e6), min(high, 1e6)
        floats = st.floats(low, high, exclude_min=True, exclude_max=True)
        return floats | st.integers(math.ceil(low), math.floor(high))
    if annotation is str:
        return st.sampled_from(
            ["x", "MODEL_ID", "registry.example.com/sdxl:1.4", "vllm:num_requests_waiting"]
        )
    if get_origin(annotation) is tuple:
        (item, _) = get_args(annotation)
        return st.lists(_valid(item, None), max_size=2)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        required: dict[str, st.SearchStrategy[Any]] = {}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for name, sub in annotation.model_fields.items():
            (required if sub.is_required() else optional)[_key(name, sub)] = _valid(sub.annotation, sub)
        if annotation.model_config.get("extra") == "allow":
            optional["nodeSelector"] = st.just({"nvidia.com/gpu.present": "true"})
        return st.fixed_dictionaries(required, optional=optional)
    raise AssertionError(f"no strategy for {annotation!r}: teach test_crd.py the new field type")


def edge_values(annotation: Any, field: FieldInfo | None) -> list[Any]:
    """Values at and just beyond each bound, and of wrong types, for a field of this type."""
    edges = _bounds(field)[2]
    if annotation is bool:
        return WRONG_FOR_BOOL
    if annotation in (int, float):
        return edges + [e + 0.5 for e in edges if annotation is int] + WRONG_FOR_NUMBER
    if annotation is str:
        return STRINGS + WRONG_FOR_STR
    if get_origin(annotation) is tuple:
        return WRONG_FOR_LIST
    return WRONG_FOR_OBJECT


def _edge(annotation: Any, field: FieldInfo | None) -> st.SearchStrategy[Any]:
    values = st.sampled_from(edge_values(annotation, field))
    return values | TEXT if annotation is str else values


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _paths(
    model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], FieldInfo]]:
    """Every field under ``model``, as a path; a list of models is entered through its first item."""
    out: list[tuple[tuple[str | int, ...], FieldInfo]] = []
    for name, field in model.model_fields.items():
        path = (*prefix, _key(name, field))
        out.append((path, field))
        annotation = field.annotation
        if get_origin(annotation) is tuple:
            annotation, path = get_args(annotation)[0], (*path, 0)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _paths(annotation, path)
    return out


PATHS = _paths(ServiceSpec)


def _put(spec: dict[str, Any], path: tuple[str | int, ...], value: Any) -> bool:
    """Set (or, with MISSING, remove) the field at ``path``, making room on the way down; False when
    a wrong type put there earlier is in the way."""
    node: Any = spec
    for step, after in itertools.pairwise(path):
        if isinstance(node, list) and isinstance(step, int):
            if not node:
                node.append({"name": "A"})
            node = node[step]
        elif isinstance(node, dict) and isinstance(step, str):
            node = node.setdefault(step, [] if isinstance(after, int) else {})
        else:
            return False
    if not isinstance(node, dict):
        return False
    node.pop(path[-1], None)
    if value is not MISSING:
        node[path[-1]] = value
    return True


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = draw(_valid(ServiceSpec, None))
    for _ in range(draw(st.integers(0, 3))):
        path, field = draw(st.sampled_from(PATHS))
        missing = field.is_required() and draw(st.booleans())
        _put(spec, path, MISSING if missing else draw(_edge(field.annotation, field)))
    return spec


EDGE_CASES = [
    (path, value)
    for path, field in PATHS
    for value in [*edge_values(field.annotation, field), *([MISSING] if field.is_required() else [])]
]


@pytest.mark.parametrize(
    ("path", "value"), EDGE_CASES, ids=[f"{'.'.join(map(str, p))}={v!r}" for p, v in EDGE_CASES]
)
def test_each_edge_alone_is_admitted_exactly_when_spec_py_accepts_it(
    path: tuple[str | int, ...], value: Any
) -> None:
    """Every bound at and just beyond, every wrong type, every required field missing: one at a time,
    so each is decided by that field alone (the property test below mixes them)."""
    spec: dict[str, Any] = {"image": "x"}
    assert _put(spec, path, value)
    document = manifest(spec)
    admitted, causes = admit(document, SCHEMA)
    assert (causes == []) == spec_accepts(document), messages(causes)
    if not causes:
        assert parse_service(admitted) == parse_service(document)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_the_schema_admits_exactly_what_spec_py_accepts(spec: dict[str, Any]) -> None:
    document = manifest(spec)
    admitted, causes = admit(document, SCHEMA)
    note(f"causes: {messages(causes)}")
    assert (causes == []) == spec_accepts(document)
    if not causes:
        assert parse_service(admitted) == parse_service(document)


def test_gpuscale_crd_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    from gpuscale.cli import main

    assert main(["crd"]) == 0
    assert capsys.readouterr().out == CRD_FILE.read_text()
