"""docs/reference.md cannot drift from the code: its tables are the generator's output, every schema field
is in it with the schema's default, every condition reason the operator sets is described, and every
reason or message it quotes is the code's. The helpers here serve test_troubleshooting_doc.py too."""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from gpuscale import reference
from gpuscale.kube import objects

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reference.md"
README = ROOT / "README.md"
FIX = "regenerate: .venv/bin/python -m gpuscale.reference docs/reference.md"

OUR_SOURCES = (ROOT / "operator" / "src" / "gpuscale", ROOT / "gpuscale_gateway", ROOT / "inference_app")
# The files that set conditions and post Events.
CONDITION_SOURCES = (
    ROOT / "operator" / "src" / "gpuscale" / "kube" / "handlers.py",
    ROOT / "operator" / "src" / "gpuscale" / "kube" / "health.py",
)
# CamelCase words those files read from Kubernetes objects rather than write as a reason or type.
READ_NOT_WRITTEN = frozenset({"Deployment", "False", "PodScheduled", "Progressing"})
# Words the docs quote that are Kubernetes' or kopf's, not ours: a pod's phase, the kubelet's Event for a
# failed probe, and kopf's reason for the log lines it posts as Events (checked in kopf's source below).
FOREIGN_WORDS = frozenset({"Pending", "Unhealthy", "Logging"})
# Messages the docs quote from other programs, by how they start: the scheduler, the kubelet, kubectl
# and the API server. The docs say these are quoted as they usually read.
FOREIGN_MESSAGES = (
    "0/3 nodes are available:",  # kube-scheduler's FitError
    "didn't match Pod's node affinity/selector",  # kube-scheduler
    "Readiness probe failed:",  # the kubelet
    "no matches for kind",  # kubectl, without the CRD
    "the server doesn't have a resource type",  # kubectl, without the CRD
    "is attempting to grant RBAC permissions not currently held",  # the API server's escalation check
    "403 Forbidden",  # the API server's answer, as the operator's client and kopf print it
)
COMMANDS = ("kubectl ", "curl ", "helm ", "gpuscale ", "docker ", "kind ", ".venv/", "python ")
PLACEHOLDER = re.compile(r"\b[A-Z]{1,8}\b|…")


# --- what the code says ---------------------------------------------------------------------------------


def _python_files(roots: tuple[Path, ...]) -> Iterator[Path]:
    for root in roots:
        yield from sorted(root.rglob("*.py"))


def _strings(tree: ast.AST) -> Iterator[str]:
    """Every string the code holds: plain literals as they are, f-strings with `{}` for each value."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )


@functools.cache
def literals(roots: tuple[Path, ...] = OUR_SOURCES) -> frozenset[str]:
    found: set[str] = set()
    for path in _python_files(roots):
        found.update(_strings(ast.parse(path.read_text(), str(path))))
    return frozenset(found)


def kopf_literals() -> frozenset[str]:
    return literals((Path(kopf.__file__).parent,))


def written_words() -> set[str]:
    """The condition types, reasons and Event reasons the operator writes: its CamelCase literals."""
    words: set[str] = set()
    for path in CONDITION_SOURCES:
        for text in _strings(ast.parse(path.read_text())):
            if re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z]*)*", text):
                words.add(text)
    return words - READ_NOT_WRITTEN


_VALUE = re.compile(r"\{\}|%[sdr]")


@functools.cache
def _template_pattern(template: str) -> re.Pattern[str] | None:
    """A code string with values in it as a regex, its values standing for any text; None for a string
    with no value or too little fixed text to tell a message by (`{} {}`)."""
    parts = _VALUE.split(template)
    if len(parts) == 1 or sum(len(p.strip()) for p in parts) < 8:
        return None
    return re.compile(".*".join(re.escape(p) for p in parts), re.DOTALL)


def in_code(message: str, strings: frozenset[str]) -> bool:
    """Whether a message the doc quotes can come from ``strings``: its fixed text, with placeholders
    (N, POD, …) for values, appears in one string; or one string with values in it matches all of it
    (a log line that wraps another message: `tick failed: {}`)."""
    quoted = re.compile(".*".join(re.escape(p) for p in PLACEHOLDER.split(message)), re.DOTALL)
    if any(quoted.search(s) for s in strings):
        return True
    patterns = (_template_pattern(s) for s in strings)
    return any(p is not None and p.fullmatch(message) for p in patterns)


# --- what a doc says ------------------------------------------------------------------------------------


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, with line breaks inside a span read as spaces."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose)]


def named_words(text: str) -> set[str]:
    """Backticked CamelCase words: the reasons, condition types and kinds a doc names."""
    return {s for s in inline_code(text) if re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z]*)*", s)}


def named_conditions(text: str) -> set[tuple[str, str]]:
    found = (re.fullmatch(r"(\w+)=(\w+)", s) for s in inline_code(text))
    return {(m.group(1), m.group(2)) for m in found if m}


def quoted_messages(text: str) -> list[str]:
    """Backticked spans of three words or more that are neither a command nor another program's."""
    return [
        s
        for s in inline_code(text)
        if len(s.split()) >= 3
        and not s.startswith(COMMANDS)
        and not any(foreign in s for foreign in FOREIGN_MESSAGES)
    ]


def check_words_and_messages(text: str) -> None:
    ours, theirs = literals(), kopf_literals()
    invented = sorted(w for w in named_words(text) - FOREIGN_WORDS if w not in ours)
    assert not invented, f"names no string of the code has: {invented}"
    assert "Logging" in theirs, "kopf no longer posts its log lines with the reason Logging"
    for type_, status in named_conditions(text):
        assert type_ in ours, f"{type_}={status}: no such condition type in the code"
        assert status in ("True", "False", "Unknown")
    unknown = [m for m in quoted_messages(text) if not in_code(m, ours | theirs)]
    assert not unknown, f"quotes messages the code does not have: {unknown}"


# --- the generated tables -------------------------------------------------------------------------------


def test_the_generated_tables_are_current() -> None:
    text = DOC.read_text()
    assert reference.render(text) == text, f"docs/reference.md is stale; {FIX}"


def test_every_region_has_its_markers_once() -> None:
    text = DOC.read_text()
    for name in reference.REGIONS:
        assert text.count(reference.begin_marker(name)) == 1, name
        assert text.count(reference.end_marker(name)) == 1, name


def _schema_fields(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Walked here, apart from the generator's walk, so that a bug there cannot hide a field."""
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        yield path, child
        yield from _schema_fields(child, path)
        if isinstance(child.get("items"), dict):
            yield from _schema_fields(child["items"], f"{path}[]")


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by their first cell's `code`."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and (m := re.fullmatch(r"`([^`]+)`", cells[0])):
            rows.setdefault(m.group(1), cells)
    return rows


@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_schema_field_is_documented_with_the_schemas_default(part: str) -> None:
    rows = _rows(DOC.read_text())
    root = reference.schema()["properties"][part]
    fields = list(_schema_fields(root, part))
    assert len(fields) > 10
    for path, node in fields:
        assert path in rows, f"{path} is not in docs/reference.md; {FIX}"
        if part != "spec":
            continue
        default = rows[path][2]
        if "default" in node:
            code = re.fullmatch(r"`(.+)`", default)
            assert code, f"{path}: default {default!r}"
            documented = json.loads(code.group(1))
            assert (documented, type(documented)) == (node["default"], type(node["default"])), path
        else:
            assert default in ("", "required"), f"{path}: documents a default the schema does not have"


def test_every_template_key_the_operator_reads_is_documented() -> None:
    rows = _rows(DOC.read_text())
    missing = sorted(objects.TEMPLATE_KEYS - set(rows))
    assert not missing, f"spec.template keys missing: {missing}; {FIX}"


def test_the_printer_columns_and_the_readme_header_are_the_crds() -> None:
    header = reference.header_line()
    assert header.split() == ["NAME", "READY", "REPLICAS", "DESIRED", "QUEUED", "RUNNING", "AGE"]
    assert header in DOC.read_text()
    assert header in README.read_text(), "README's `kubectl get gis` header differs from the CRD's columns"


def test_the_generator_fails_loudly_on_missing_or_unknown_markers() -> None:
    with pytest.raises(ValueError, match="need exactly one"):
        reference.render("no markers here\n")
    text = DOC.read_text() + "\n<!-- BEGIN GENERATED: nonsense (x) -->\n"
    with pytest.raises(ValueError, match="unknown generated regions"):
        reference.render(text)


def test_the_command_rewrites_a_stale_file_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "reference.md"
    current = DOC.read_text()
    begin = reference.begin_marker("status")
    stale.write_text(current.replace(begin, f"{begin}\n| stale row |", 1))
    assert reference.main(["--check", str(stale)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert reference.main([str(stale)]) == 0
    assert stale.read_text() == current
    assert reference.main(["--check", str(stale)]) == 0


# --- the hand-written sections ----------------------------------------------------------------------------


def test_every_reason_and_type_the_operator_writes_is_described() -> None:
    written = written_words()
    assert {"Ready", "ScalingActive", "PodsSchedulable", "InvalidSpec", "ScaledUp"} <= written
    missing = sorted(written - named_words(DOC.read_text()))
    assert not missing, f"docs/reference.md does not describe {missing}"


def test_every_reason_and_message_the_reference_quotes_is_the_codes() -> None:
    check_words_and_messages(DOC.read_text())


def test_the_message_check_catches_an_invented_one() -> None:
    strings = literals()
    assert in_code("0/N replicas ready", strings)
    assert in_code("no ready gateway pod to read the queue from", strings)
    assert not in_code("the gateway is on holiday this tick", strings)
    assert not in_code("0/N replicas almost ready", strings)
