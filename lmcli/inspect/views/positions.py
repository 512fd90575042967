"""positions: how the model tells positions apart, and how far each head looks.

- learned: the cosine similarity of the trained position vectors (nearby positions grow alike);
- sinusoidal: the fixed table of Vaswani et al.; its similarity depends only on the distance;
- rope: each channel pair turns with its own wavelength; pairs that complete many turns within
  the context tell neighbours apart, pairs that complete less than one tell far from near;
- none: no table at all; the causal mask alone tells positions apart (a position sees more
  keys the later it is).
For every scheme: the attention each head pays by distance on the text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmcli.config import InspectConfig
from lmcli.inspect.panels import Bars, Heatmap, Panel, ViewResult
from lmcli.inspect.source import Subject, Text, fit
from lmcli.inspect.views.attention import capture
from lmcli.models.transformer import ROPE_BASE, Transformer, sinusoidal_table

MAX_SHOWN = 64  # positions drawn in a similarity heatmap (evenly spaced over the context)


def similarity(table: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of rows (P, P) of a position table (P, C)."""
    unit = F.normalize(table.float(), dim=-1)
    return unit @ unit.T


def distance_bins(T: int) -> list[tuple[int, int]]:
    """Distances 0, 1, 2, 3, then 4-7, 8-15, ... up to T - 1: [start, end) pairs."""
    bins = [(d, d + 1) for d in range(min(4, T))]
    start = 4
    while start < T:
        bins.append((start, min(2 * start, T)))
        start *= 2
    return bins


def by_distance(weights: torch.Tensor, bins: list[tuple[int, int]]) -> list[float]:
    """Mean over queries of the attention mass on keys at each distance bin, from one head's
    weights (T, T); every query's mass sums to 1, so the row does too."""
    T = weights.shape[0]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    distance = (i - j).clamp_min(0)  # (T, T); above the diagonal the weight is 0 anyway
    return [
        float((weights * ((distance >= a) & (distance < b))).sum(dim=1).mean()) for a, b in bins
    ]


def _labels(positions: list[int]) -> list[str]:
    return [str(p) for p in positions]


def scheme_panels(subject: Subject) -> tuple[list[Panel], dict[str, object]]:
    model = subject.model
    assert isinstance(model, Transformer)
    cfg = subject.config
    step = max(1, math.ceil(cfg.context / MAX_SHOWN))
    shown = list(range(0, cfg.context, step))
    if cfg.pos in ("learned", "sinusoidal"):
        table = (
            model.wpe.weight.detach()
            if model.wpe is not None
            else sinusoidal_table(cfg.context, cfg.width)
        )
        sim = similarity(table)[shown][:, shown]
        note = (
            "trained: nearby positions have grown alike"
            if cfg.pos == "learned"
            else "fixed: the similarity depends only on the distance"
        )
        panels: list[Panel] = [
            Heatmap(
                f"{cfg.pos} positions: cosine similarity",
                sim.tolist(),
                _labels(shown),
                _labels(shown),
                lo=-1.0,
                note=note,
                row_axis="position",
                col_axis="position",
            )
        ]
        if cfg.pos == "sinusoidal":
            panels.append(
                Heatmap(
                    "the sinusoidal table",
                    table[shown].tolist(),
                    _labels(shown),
                    [str(c) for c in range(cfg.width)],
                    lo=-1.0,
                    row_axis="position",
                    col_axis="channel",
                )
            )
        return panels, {"positions": shown, "similarity": sim.tolist()}
    if cfg.pos == "rope":
        D = cfg.width // cfg.heads
        wavelengths = [2 * math.pi * ROPE_BASE ** (2 * i / D) for i in range(D // 2)]
        turns = [cfg.context / w for w in wavelengths]
        labels = [f"pair {i}: {w:,.0f} tokens" for i, w in enumerate(wavelengths)]
        slow = sum(1 for t in turns if t < 1)
        return [
            Bars(
                "RoPE: turns each channel pair makes over the context (1 = at least one)",
                labels,
                [min(1.0, t) for t in turns],
                cut=len(turns) - slow if slow else None,
                cut_label=f"below: {slow} pairs turn less than once in {cfg.context} tokens",
                note="fast pairs tell neighbours apart; slow ones tell far from near",
            )
        ], {"wavelengths": wavelengths, "turns_over_context": turns}
    return [], {}


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    ids = fit(text, subject.model.max_positions)
    panels, data = scheme_panels(subject)
    layers = list(range(subject.config.layers))
    heads = subject.config.heads
    captured = capture(subject, ids, layers, heads)
    bins = distance_bins(len(ids))
    rows: list[str] = []
    values: list[list[float | None]] = []
    for layer in layers:
        for head in range(heads):
            rows.append(f"layer {layer} head {head}")
            values.append([*by_distance(captured.weights[layer][0, head], bins)])
    cols = [str(a) if b == a + 1 else f"{a}-{b - 1}" for a, b in bins]
    panels.append(
        Heatmap(
            "attention by distance (mass per distance range)",
            values,
            rows,
            cols,
            row_axis="head",
            col_axis="distance (tokens back)",
            note="each row sums to 1: where the head looks, on average",
        )
    )
    data.update(
        {
            "scheme": subject.config.pos,
            "distance_bins": cols,
            "heads": rows,
            "attention_by_distance": values,
        }
    )
    notes = list(text.notes)
    if subject.config.pos == "none":
        notes.append("no position table: the causal mask alone tells positions apart")
    return ViewResult(
        "positions",
        f"Positions ({subject.config.pos})",
        "How the model encodes where a token is, and how far back each head looks on average.",
        panels,
        data,
        notes,
    )
