"""docs/troubleshooting.md names only reasons the operator writes and messages its code holds, quotes the
figures the operator really gives the pods, and its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from gpuscale.kube import objects
from gpuscale.spec import parse_service

from inference_app.settings import ServerSettings
from tests.unit.test_reference_doc import (
    DOC,
    FOREIGN_WORDS,
    ROOT,
    check_words_and_messages,
    named_words,
    written_words,
)

TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def text() -> str:
    return " ".join(TROUBLESHOOTING.read_text().split())  # prose wraps anywhere


def test_every_reason_it_names_is_one_the_operator_writes() -> None:
    named = named_words(TROUBLESHOOTING.read_text()) - FOREIGN_WORDS
    assert {"Unschedulable", "NoLoadData", "NoGateway", "ImagePullBackOff"} <= named
    invented = sorted(named - written_words())
    assert not invented, f"troubleshooting.md names reasons the operator never writes: {invented}"


def test_every_message_it_quotes_is_the_codes() -> None:
    check_words_and_messages(TROUBLESHOOTING.read_text())


def test_it_gives_the_commands_a_user_pastes() -> None:
    for command in (
        "kubectl get gis",
        "kubectl describe gis NAME",
        "kubectl get events --field-selector involvedObject.name=NAME",
        "kubectl logs -n gpuscale-system deploy/gpuscale-operator",
        "kubectl apply -f crds/gpuinferenceservices.gpuscale.io.yaml",
    ):
        assert command in text(), command


def test_the_figures_it_quotes_are_what_the_operator_builds() -> None:
    manifest = {
        "apiVersion": "gpuscale.io/v1alpha1",
        "kind": "GpuInferenceService",
        "metadata": {"name": "x"},
        "spec": {"image": "i"},
    }
    service = parse_service(manifest)
    pod = objects.build_model_deployment(service, {}, 1)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ready, live, start = (container[k] for k in ("readinessProbe", "livenessProbe", "startupProbe"))
    assert ready["periodSeconds"] == 1
    doc = text()
    assert f"Readiness `GET {ready['httpGet']['path']}` every second" in doc
    assert (
        f"liveness `GET {live['httpGet']['path']}` every {live['periodSeconds']} s, restarted after "
        f"{live['failureThreshold']} failures"
    ) in doc
    seconds = start["periodSeconds"] * start["failureThreshold"]
    assert seconds % 60 == 0
    assert (
        f"startup probe on `{start['httpGet']['path']}` every {start['periodSeconds']} s, up to "
        f"{start['failureThreshold']} failures ({seconds // 60} minutes)"
    ) in doc
    assert f"runs as user {pod['securityContext']['runAsUser']}" in doc
    assert f"admin port ({objects.GATEWAY_ADMIN_PORT})" in doc
    assert f"(`GPUSCALE_MAX_QUEUE`, default {ServerSettings.model_fields['max_queue'].default})" in doc


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [TROUBLESHOOTING, DOC], ids=lambda p: p.name)
def test_its_links_lead_somewhere(doc: Path) -> None:
    body = re.sub(r"`[^`]*`", "", doc.read_text())  # a regex in code may look like a link
    for target in re.findall(r"\]\(([^)\s]+)\)", body):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name}: {target}: no such file"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, f"{doc.name}: {target}: no such heading"
