"""The tables of docs/reference.md, generated from the CRD (`crd.build_crd`) and from the objects the
operator builds (`kube.objects`), so the reference says what a cluster accepts and what the operator does.

The prose around the tables is written by hand; only the regions between the markers

    <!-- BEGIN GENERATED: NAME (python -m gpuscale.reference) -->
    <!-- END GENERATED: NAME -->

are rewritten. After changing spec.py, crd.py or objects.py:

    python -m gpuscale.reference docs/reference.md            # rewrite the regions in place
    python -m gpuscale.reference --check docs/reference.md    # exit 1 when they are stale

tests/unit/test_reference_doc.py fails while the committed file differs from what this gives.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gpuscale import markdown
from gpuscale.crd import build_crd
from gpuscale.kube import objects
from gpuscale.spec import GpuInferenceService, Metadata, ServiceSpec

__all__ = [
    "REGIONS",
    "FieldRow",
    "field_rows",
    "header_line",
    "main",
    "render",
    "schema",
]

Schema = dict[str, Any]

COMMAND: Final = "python -m gpuscale.reference"
_BEGIN = re.compile(r"^<!-- BEGIN GENERATED: (?P<name>[\w-]+) .*-->$", re.MULTILINE)


def schema() -> Schema:
    """The CRD's openAPIV3Schema: the one place the fields, defaults and bounds are read from here."""
    version = build_crd()["spec"]["versions"][0]
    root: Schema = version["schema"]["openAPIV3Schema"]
    return root


# --- what the schema cannot say: what the operator does with a field --------------------------------------


def _notes() -> dict[str, str]:
    """Per field, what the operator makes of it, with the numbers taken from objects.py. The schema's
    descriptions say what a field means; these say what it turns into in the cluster."""
    o = objects
    grace = f"{o.PRE_STOP_SECONDS} + maxRequestSeconds + {o.DRAIN_SLACK_SECONDS} + {o.EXIT_SLACK_SECONDS}"
    spec_env = ", ".join(f"`{name}`" for name in o.SPEC_ENV)
    return {
        "spec.image": f"the image of the model pods' one container (`{o.MODEL_CONTAINER}`)",
        "spec.port": "`GPUSCALE_PORT` in the pod; the probes, the "
        "headless Service `NAME-model` and the gateway use it; clients use port "
        f"{o.SERVICE_PORT} of the Service `NAME`",
        "spec.gpusPerReplica": "set as the model container's request and limit; above 1 the pod also "
        "gets a memory-backed `/dev/shm`",
        "spec.slotsPerReplica": "`GPUSCALE_SLOTS` in the pod, and how many requests the gateway sends "
        "each pod at once",
        "spec.maxRequestSeconds": "`GPUSCALE_MAX_REQUEST_SECONDS`; a stopping pod drains for this + "
        f"{o.DRAIN_SLACK_SECONDS} s, and its `terminationGracePeriodSeconds` is {grace}",
        "spec.replicas": "`kubectl scale gis NAME --replicas=N` writes it (the scale subresource)",
        "spec.template": "the keys read are listed under "
        "[spec.template](#spectemplate-the-keys-the-operator-reads); other keys are kept, unused, "
        "and named in an `IgnoredTemplateKeys` Warning Event",
        "spec.template.env": f"appended to the variables the operator sets; entries named {spec_env} "
        "are dropped, since the operator sets those from the spec",
        "spec.gateway": "the Deployment `NAME-gateway` (one replica) in front of the model pods; the "
        "Service `NAME` sends to it",
        "spec.gateway.enabled": "false: the Service `NAME` selects the model pods directly, the load "
        "is read from the pods' gauges named in `spec.metrics`, and the gateway's objects are removed",
        "spec.gateway.maxQueue": "the gateway's `--max-queue`",
        "spec.gateway.queueTimeoutSeconds": "the gateway's `--queue-timeout-seconds`; the gateway drains "
        f"for this + maxRequestSeconds, at most {o.GATEWAY_MAX_DRAIN_SECONDS:g} s",
        "spec.gateway.prefetch": "the gateway's `--prefetch`",
        "spec.metrics": "read only when `gateway.enabled` is false (the gateway counts requests "
        "itself); a bare name such as `vllm:num_requests_waiting` is summed over its label sets, and "
        'labels in the name keep the sets that hold them: `vllm:num_requests_waiting{model_name="m"}`',
        "status.conditions": "one per type: [Conditions](#conditions)",
        "status.conditions[].status": "whether the condition holds",
        "status.conditions[].lastTransitionTime": "when `status` last changed",
    }


# --- the fields ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRow:
    path: str  # spec.autoscaling.minReplicas, spec.template.env[].name
    type: str
    required: bool
    has_default: bool
    default: Any
    bounds: str
    meaning: str


def _type(node: Schema) -> str:
    if node.get("type") == "array":
        return f"array of {_type(node.get('items') or {})}"
    kind = str(node.get("type") or "any")
    return f"{kind} ({node['format']})" if "format" in node else kind


def _number(value: Any) -> str:
    return json.dumps(value)


def _bounds(node: Schema) -> str:
    parts: list[str] = []
    if "minimum" in node:
        op = ">" if node.get("exclusiveMinimum") else "≥"
        parts.append(f"{op} {_number(node['minimum'])}")
    if "maximum" in node:
        op = "<" if node.get("exclusiveMaximum") else "≤"
        parts.append(f"{op} {_number(node['maximum'])}")
    if node.get("minLength") == 1:
        parts.append("not empty")
    elif "minLength" in node:
        parts.append(f"at least {node['minLength']} characters")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    return ", ".join(parts)


def field_rows(node: Schema, prefix: str, notes: Mapping[str, str] | None = None) -> Iterator[FieldRow]:
    """Every field under ``node``, depth first in the schema's order: objects, then what is inside them."""
    required = set(node.get("required") or [])
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        said = child.get("description") or ""
        if said.endswith(".") and not said.endswith("..."):
            said = said[:-1]  # the note, if any, follows after a semicolon
        meaning = "; ".join(p for p in (said, (notes or {}).get(path)) if p)
        yield FieldRow(
            path,
            _type(child),
            name in required,
            "default" in child,
            child.get("default"),
            _bounds(child),
            meaning,
        )
        yield from field_rows(child, path, notes)
        items = child.get("items")
        if isinstance(items, dict):
            yield from field_rows(items, f"{path}[]", notes)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown.table(header, [[_cell(c) for c in row] for row in rows])


def _default_cell(row: FieldRow) -> str:
    if row.required:
        return "required"
    if row.has_default:
        return f"`{json.dumps(row.default)}`"
    return ""


def spec_table() -> str:
    rows = _rows("spec")
    body = [[f"`{r.path}`", r.type, _default_cell(r), r.bounds, r.meaning] for r in rows]
    return _table(["field", "type", "default", "bounds", "what it does"], body)


def _rows(part: str) -> list[FieldRow]:
    """The rows of ``spec`` or ``status``; every field must say what it does, and every note must land."""
    notes = {k: v for k, v in _notes().items() if k.startswith(f"{part}.")}
    rows = list(field_rows(schema()["properties"][part], part, notes))
    unexplained = [r.path for r in rows if not r.meaning]
    if unexplained:
        raise ValueError(
            f"no description or note for {unexplained}: add one in crd.py, spec.py or reference.py"
        )
    stale = set(notes) - {r.path for r in rows}
    if stale:
        raise ValueError(f"notes for fields the schema does not have: {sorted(stale)}")
    return rows


def status_table() -> str:
    rows = _rows("status")
    return _table(["field", "type", "meaning"], [[f"`{r.path}`", r.type, r.meaning] for r in rows])


def rules_table() -> str:
    """The CEL rules on objects (cross-field and metadata.name). A scalar's rules restate its bounds."""
    rows: list[list[str]] = []

    def walk(node: Schema, path: str) -> None:
        if node.get("type") == "object":
            for rule in node.get("x-kubernetes-validations") or []:
                where = path if path == "the object" else f"`{path}`"
                rows.append([where, f"`{rule['rule']}`", rule.get("message", "")])
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}" if path != "the object" else name)

    walk(schema(), "the object")
    return _table(["on", "rule", "message when it fails"], rows)


# --- spec.template ------------------------------------------------------------------------------------

# How a merged key combines with the operator's own value: each is merged differently, so each is said.
_MERGED: Final[dict[str, tuple[str, str]]] = {
    "labels": (
        "model pods' labels",
        "added to the operator's; the operator's win (selectors depend on them)",
    ),
    "annotations": ("model pods' annotations", "added to the operator's"),
    "securityContext": ("model pod", "merged key by key over the operator's"),
    "containerSecurityContext": (
        "model container's `securityContext`",
        "merged key by key over the operator's",
    ),
    "resources": (
        "model container",
        f"`requests` and `limits` merged over the operator's; `{objects.GPU_RESOURCE}` is always "
        "`gpusPerReplica`",
    ),
    "volumes": ("model pod", "merged by `name`: one of the operator's names replaces it"),
    "volumeMounts": ("model container", "merged by `mountPath`"),
}


def _example_service() -> GpuInferenceService:
    # Built unvalidated so that the names read NAME; every other field is the schema's default.
    metadata = Metadata.model_construct(name="NAME", namespace="NAMESPACE")
    spec = ServiceSpec(image="IMAGE")
    return GpuInferenceService.model_construct(
        api_version="gpuscale.io/v1alpha1", kind="GpuInferenceService", metadata=metadata, spec=spec
    )


def _probe(key: str, probe: Mapping[str, Any]) -> str:
    get = probe["httpGet"]
    period, failures = probe["periodSeconds"], probe["failureThreshold"]
    text = (
        f"`GET {get['path']}` on port `{get['port']}` every {period} s, timeout "
        f"{probe['timeoutSeconds']} s, failureThreshold {failures}"
    )
    if "initialDelaySeconds" in probe:
        text += f", initialDelaySeconds {probe['initialDelaySeconds']}"
    if key == "startupProbe":
        text += f": up to {period * failures} s to start"
    return text


def _ours(key: str, value: Any) -> str:
    if value is None:
        return "none"
    if key.endswith("Probe"):
        return _probe(key, value)
    if key in ("labels", "annotations"):
        return ", ".join(f"`{k}`" for k in value)
    return f"`{json.dumps(value, separators=(',', ':'))}`"


def template_table() -> str:
    if set(_MERGED) != set(objects.MERGED_KEYS):
        raise ValueError(f"say how each of objects.MERGED_KEYS merges: {sorted(objects.MERGED_KEYS)}")
    service = _example_service()
    deployment = objects.build_model_deployment(service, {}, 1)
    meta, pod = deployment["spec"]["template"]["metadata"], deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    spec_env = ", ".join(f"`{name}`" for name in objects.SPEC_ENV)
    rows = [["`env`", "model container", f"appended; entries named {spec_env} are dropped", ""]]
    for key in objects.POD_REPLACED_KEYS:
        rows.append([f"`{key}`", "model pod", "replaces the operator's", _ours(key, pod.get(key))])
    for key in objects.CONTAINER_REPLACED_KEYS:
        rows.append(
            [f"`{key}`", "model container", "replaces the operator's", _ours(key, container.get(key))]
        )
    ours = {
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "securityContext": pod.get("securityContext"),
        "containerSecurityContext": container.get("securityContext"),
        "resources": container.get("resources"),
        "volumes": pod.get("volumes"),
        "volumeMounts": container.get("volumeMounts"),
    }
    for key in objects.MERGED_KEYS:
        where, how = _MERGED[key]
        rows.append([f"`{key}`", where, how, _ours(key, ours[key])])
    listed = {row[0].strip("`") for row in rows}
    if listed != objects.TEMPLATE_KEYS:
        raise ValueError(f"template keys listed {sorted(listed)} differ from {sorted(objects.TEMPLATE_KEYS)}")
    header = ["key", "applies to", "with the operator's own", "the operator's own (default spec)"]
    return _table(header, rows)


# --- printer columns ----------------------------------------------------------------------------------


def printer_columns() -> list[Schema]:
    columns: list[Schema] = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    return columns


def header_line() -> str:
    """`kubectl get gis`'s header: NAME, then the CRD's columns, as kubectl spaces an empty table."""
    return "   ".join(["NAME", *(str(c["name"]).upper() for c in printer_columns())])


def columns_table() -> str:
    status = schema()["properties"]["status"]["properties"]
    rows = []
    for column in printer_columns():
        path = str(column["jsonPath"])
        field = path.removeprefix(".status.")
        if field in status:
            meaning = str(status[field].get("description", ""))
        elif "conditions" in path:
            meaning = "the status of the condition named in the path: `True`, `False` or `Unknown`"
        else:
            meaning = "time since the object was created"
        rows.append([column["name"].upper(), column["type"], f"`{path}`", meaning])
    table = _table(["column", "type", "JSONPath", "meaning"], rows)
    return f"```text\n{header_line()}\n```\n\n{table}"


REGIONS: Final[dict[str, Callable[[], str]]] = {
    "spec": spec_table,
    "template": template_table,
    "rules": rules_table,
    "status": status_table,
    "columns": columns_table,
}


# --- the file -----------------------------------------------------------------------------------------


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN GENERATED: {name} ({COMMAND}) -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED: {name} -->"


def render(text: str) -> str:
    """``text`` with each generated region's content replaced by what the sources give now."""
    found = [m.group("name") for m in _BEGIN.finditer(text)]
    unknown = sorted(set(found) - set(REGIONS))
    if unknown:
        raise ValueError(f"unknown generated regions {unknown}; known: {sorted(REGIONS)}")
    for name, make in REGIONS.items():
        begin, end = begin_marker(name), end_marker(name)
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"need exactly one {begin!r} and one {end!r}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{make()}\n{end}{tail}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Regenerate the tables of docs/reference.md.")
    parser.add_argument("path", nargs="?", default="docs/reference.md", help="the file (docs/reference.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    path = Path(args.path)
    try:
        text = path.read_text()
        new = render(text)
    except (OSError, ValueError) as exc:
        print(f"{COMMAND}: error: {path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{path} is stale; run: {COMMAND} {path}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
