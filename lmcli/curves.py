"""Curves as text for the terminal: a sparkline of a series, and a loss-by-position curve summed
up over spans that double (positions 1, 2-3, 4-7, ...), where a model's loss falls."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 48) -> str:
    """Values as a row of block characters, low to high; more than `width` values are averaged
    in `width` consecutive groups (so a noisy curve shows its trend)."""
    if not values:
        return ""
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in pairwise(edges)]
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


def doubling_spans(context: int) -> list[tuple[int, int]]:
    """Positions 1, 2-3, 4-7, ... up to the context: where a model's loss falls, evenly shown."""
    spans, start = [], 1
    while start <= context:
        spans.append((start, min(2 * start - 1, context)))
        start *= 2
    return spans


def span_means(values: Sequence[float], spans: list[tuple[int, int]]) -> list[float]:
    """The mean of values[a-1 .. b-1] (positions a..b, counted from 1) for each span."""
    return [sum(values[a - 1 : b]) / (b - a + 1) for a, b in spans]
