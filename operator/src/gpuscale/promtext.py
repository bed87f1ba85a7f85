"""Reading Prometheus text exposition (what /metrics answers) into plain numbers."""

from __future__ import annotations

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


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET `url`/metrics and parse it."""
    return parse_samples(httpx.get(f"{url}/metrics", timeout=timeout).text)
