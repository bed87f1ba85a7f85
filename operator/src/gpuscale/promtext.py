"""Reading Prometheus text exposition (what /metrics answers) into plain numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


def parse_samples(text: str) -> dict[str, float]:
    """Every sample by its name and labels, e.g. `gpuscale_queue_depth` or
    `gpuscale_requests_total{outcome="ok"}` (labels sorted by name)."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if sample.labels:
                key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}"
            samples[key] = sample.value
    return samples


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _split(key: str) -> tuple[str, set[tuple[str, str]]]:
    """`name{a="1",b="2"}` as its name and its set of labels."""
    name, _, labels = key.partition("{")
    return name, set(_LABEL.findall(labels))


def metric_value(samples: Mapping[str, float], name: str) -> float | None:
    """One number for ``name`` from `parse_samples`' output: the sum of the gauge's samples over every
    label set that holds the labels ``name`` gives. A bare ``vllm:num_requests_waiting`` sums all of
    vLLM's ``{engine=...,model_name=...}`` samples; ``vllm:num_requests_waiting{model_name="m"}`` sums
    that model's, over its engines. None when no sample matches."""
    wanted, labels = _split(name)
    found = [
        value for key, value in samples.items() if (split := _split(key))[0] == wanted and labels <= split[1]
    ]
    return sum(found) if found else None


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET `url`/metrics and parse it."""
    return parse_samples(httpx.get(f"{url}/metrics", timeout=timeout).text)
