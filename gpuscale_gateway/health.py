"""Bringing replicas back: every second, probe the ones marked down; a 200 makes them ready again."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gpuscale_gateway.registry import Registry, Replica
from gpuscale_gateway.upstream import UpstreamError, probe

log = logging.getLogger("gpuscale_gateway")


async def _probe(registry: Registry, replica: Replica, path: str) -> None:
    with contextlib.suppress(UpstreamError, TimeoutError):
        if await probe(replica.pool, path) == 200:
            registry.mark_ready(replica)


async def watch_down_replicas(registry: Registry, path: str, interval: float = 1.0) -> None:
    """Runs until cancelled. Also closes pooled connections too old to reuse."""
    while True:
        await asyncio.sleep(interval)
        down = registry.down()
        if down:
            await asyncio.gather(*(_probe(registry, replica, path) for replica in down))
        for replica in registry:
            replica.pool.sweep()
