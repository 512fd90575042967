"""next: the distribution over the next token after the text, at several temperatures.

The probabilities are the softmax of what the sampler's own `filtered` returns (temperature,
then top-k, then top-p: lmcli.sampling.choose), so a bar shows exactly the chance that
`lmcli sample` with those settings draws that token. Temperature never reorders the tokens;
it flattens (above 1) or sharpens (below 1) the same ranking, and the filters cut it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmcli.config import InspectConfig
from lmcli.inspect.panels import Bars, Table, ViewResult
from lmcli.inspect.source import Subject, Text, as_batch, fit
from lmcli.sampling.choose import Array, filtered


def next_logits(subject: Subject, ids: list[int]) -> Array:
    """The model's logits (V,) for the token after `ids` (float64)."""
    with torch.no_grad():
        logits, _ = subject.model(as_batch(ids))  # (1, T, V)
    return logits[0, -1].double().numpy()


def distribution(
    logits: Array, temperature: float, top_k: int | None, top_p: float | None
) -> Array:
    """What the sampler draws from (V,): one-hot on the argmax at temperature 0."""
    if temperature == 0:
        probs = np.zeros(logits.shape[-1])
        probs[int(logits.argmax())] = 1.0
        return probs
    scaled = filtered(logits[None], temperature, top_k, top_p)[0]
    probs = np.exp(scaled - scaled.max())
    return probs / probs.sum()


def entropy_bits(probs: Array) -> float:
    kept = probs[probs > 0]
    return float(-(kept * np.log2(kept)).sum()) + 0.0  # + 0.0: never -0.0


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    ids = fit(text, subject.model.max_positions)
    logits = next_logits(subject, ids)
    order = np.argsort(-logits, kind="stable")  # most likely first, at any temperature
    shown = [int(t) for t in order[: cfg.top]]
    labels = [repr(subject.token_text(t)) for t in shown]
    filters = ", ".join(
        f
        for f in (
            f"top-k {cfg.top_k}" if cfg.top_k else "",
            f"top-p {cfg.top_p}" if cfg.top_p else "",
        )
        if f
    )
    panels: list[Bars | Table] = []
    columns: list[dict[str, object]] = []
    rows: list[list[str | float | int]] = []
    for t in cfg.temperatures:
        probs = distribution(logits, t, cfg.top_k, cfg.top_p)
        kept = int((probs > 0).sum())
        entropy = entropy_bits(probs)
        values = [float(probs[i]) for i in shown]
        cut = kept if kept < len(shown) else None
        panels.append(
            Bars(
                f"temperature {t:g}",
                labels,
                values,
                cut=cut,
                cut_label=f"{filters or 'greedy'} keeps {kept}" if cut is not None else "",
                note=f"entropy {entropy:.2f} bits; {kept:,} of {len(probs):,} tokens kept",
            )
        )
        columns.append(
            {
                "temperature": t,
                "kept": kept,
                "entropy_bits": entropy,
                "probs": values,
                "kept_ids": [int(i) for i in np.flatnonzero(probs)][:1000],
            }
        )
        rows.append([f"{t:g}", kept, round(entropy, 3), round(max(values), 4)])
    panels.append(
        Table("per temperature", ["temperature", "kept", "entropy (bits)", "top probability"], rows)
    )
    prompt_tail = subject.tokenizer.decode(ids[-40:])
    data = {
        "context_tokens": len(ids),
        "top_ids": shown,
        "top_tokens": [subject.token_text(t) for t in shown],
        "logits": [float(logits[i]) for i in shown],
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "columns": columns,
        "uniform_bits": math.log2(len(logits)),
    }
    return ViewResult(
        "next",
        f"Next token after …{prompt_tail!r}",
        "The model's distribution over the next token at each temperature, as the sampler "
        "draws from it: lower temperatures sharpen it, higher ones flatten it, and top-k / "
        "top-p cut its tail (dashed line).",
        list(panels),
        data,
        text.notes,
    )
