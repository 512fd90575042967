"""A benchmark figure: repeated runs after a warm-up, their median and spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Figure:
    suite: str  # tokenize, train or sample
    name: str  # what was measured, e.g. "tiny: tokens/s"
    unit: str
    runs: tuple[float, ...]  # one value per measured run, warm-up excluded
    settings: dict[str, Any] = field(default_factory=dict)  # what it ran with

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite, "name": self.name, "unit": self.unit, "median": self.median,
            "min": self.low, "max": self.high, "runs": list(self.runs),
            "settings": self.settings,
        }  # fmt: skip


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds
