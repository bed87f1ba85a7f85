"""Reading Prometheus text exposition (what /metrics answers) into plain numbers."""

from __future__ import annotations

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


def metric_value(samples: Mapping[str, float], name: str) -> float | None:
    """One number for ``name`` from `parse_samples`' output: a name with labels (``a{x="1"}``) is that
    sample alone; a bare name is the sum of its samples over every label set, so that vLLM's
    ``vllm:num_requests_waiting{model_name=...}`` is read as ``vllm:num_requests_waiting``. None when
    there is no such sample."""
    if "{" in name:
        return samples.get(name)
    found = [v for k, v in samples.items() if k == name or k.startswith(name + "{")]
    return sum(found) if found else None


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET `url`/metrics and parse it."""
    return parse_samples(httpx.get(f"{url}/metrics", timeout=timeout).text)
