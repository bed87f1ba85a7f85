"""Which replicas a scale-down removes: never a busy one. Pure, so that the control loop and the
simulator (`gpuscale bench`) follow the one rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

R = TypeVar("R")


def pick_victims(
    count: int, starting: Sequence[R], idle: Iterable[R], longest_idle: Callable[[R], float]
) -> list[R]:
    """Up to `count` replicas that are safe to remove: starting ones (they hold no request; newest
    first, as `starting` lists them oldest first), then idle ready ones, longest idle first (the
    smallest `longest_idle` key first; ties keep their order)."""
    victims = list(reversed(starting))[:count]
    return victims + sorted(idle, key=longest_idle)[: count - len(victims)]
