"""attention: where each query position looks, per layer and head, as query x key heatmaps.

Row i is query position i; column j is key position j; a cell is the softmax weight that query
i gives key j (each row sums to 1). Cells above the diagonal are masked (causal: a position never
sees the future), and so are keys outside a local layer's sliding window. The weights come from
the model's own spelled-out attention path (capture.py), which gives the same logits as SDPA.
"""

from __future__ import annotations

import torch

from lmcli.config import InspectConfig
from lmcli.errors import InputError
from lmcli.inspect.capture import Captured, capturing, check_capture_size
from lmcli.inspect.panels import Bars, Heatmap, Panel, ViewResult
from lmcli.inspect.source import Subject, Text, as_batch, fit
from lmcli.models.transformer import Transformer, attention_mask

# Positions drawn per heatmap (the last ones); the capture itself covers the whole text.
MAX_SHOWN = 64
MAX_PANELS = 48
MAX_STAGED = 4  # heads whose stages (scores, mask) are drawn; more: the first only


def chosen(count: int, value: int | None, flag: str, what: str) -> list[int]:
    """All of range(count), or the one a flag names (refused if it does not exist)."""
    if value is None:
        return list(range(count))
    if value >= count:
        raise InputError(
            f"{flag} {value} does not exist: the model has {count} {what} (0 to {count - 1})"
        )
    return [value]


def capture(subject: Subject, ids: list[int], layers: list[int], heads: int) -> Captured:
    model = subject.model
    assert isinstance(model, Transformer)
    check_capture_size(model, 1, len(ids), len(layers), heads)
    with torch.no_grad(), capturing(model, set(layers)) as captured:
        model(as_batch(ids))
    return captured


def visible(subject: Subject, layer: int, T: int) -> torch.Tensor:
    """(T, T) True where a query may see a key in this layer: the model's own mask."""
    window = subject.model.windows[layer] if isinstance(subject.model, Transformer) else None
    mask, _ = attention_mask(0, T, window, torch.device("cpu"))
    return torch.ones(T, T, dtype=torch.bool).tril() if mask is None else mask


def sharing(subject: Subject, head: int) -> str:
    """Which query heads read the same key/value head as `head` (GQA/MQA)."""
    H, K = subject.config.heads, subject.config.n_kv_heads
    if K == H:
        return "its own keys and values (multi-head)"
    group = H // K
    first = head // group * group
    kind = "multi-query: every head" if K == 1 else "grouped-query"
    return f"kv head {head // group}, shared with heads {first}-{first + group - 1} ({kind})"


def layer_note(subject: Subject, layer: int) -> str:
    window = subject.model.windows[layer] if isinstance(subject.model, Transformer) else None
    return "global layer" if window is None else f"local layer: a window of {window} keys"


def grid(matrix: torch.Tensor, mask: torch.Tensor | None, start: int) -> list[list[float | None]]:
    """The rows and columns from `start` on, as lists; None where `mask` is False. With
    `start` > 0 and a mask (weights), a first column holds the weight on the keys before
    `start`, so that every drawn row still sums to 1."""
    out: list[list[float | None]] = []
    for i in range(start, matrix.shape[0]):
        row: list[float | None] = matrix[i, start:].tolist()
        if mask is not None:
            row = [v if mask[i, start + j] else None for j, v in enumerate(row)]
            if start:
                earlier = mask[i, :start].any()
                row.insert(0, float(matrix[i, :start].sum()) if earlier else None)
        out.append(row)
    return out


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    ids = fit(text, subject.model.max_positions)
    T = len(ids)
    layers = chosen(subject.config.layers, cfg.layer, "--layer", "layers")
    heads = chosen(subject.config.heads, cfg.head, "--head", "heads")
    if cfg.query is not None and cfg.query >= T:
        raise InputError(
            f"--query {cfg.query} does not exist: the text has {T} tokens (0 to {T - 1})"
        )
    captured = capture(subject, ids, layers, subject.config.heads)
    start = max(0, T - MAX_SHOWN)
    names = [subject.token_text(t) for t in ids]
    labels = [f"{i} {names[i]!r}" for i in range(start, T)]
    keys = [f"0-{start - 1} (all)", *labels] if start else labels  # the weights' columns
    panels: list[Panel] = []
    data: dict[str, object] = {"tokens": names, "shown_from": start, "heads": []}
    notes = list(text.notes)
    if start:
        notes.append(
            f"the heatmaps show the last {MAX_SHOWN} of {T} positions; their first "
            f"column is the weight on the {start} keys before them"
        )
    pairs = [(layer, head) for layer in layers for head in heads]
    if len(pairs) > MAX_PANELS:
        notes.append(
            f"{len(pairs)} heads: the first {MAX_PANELS} are drawn (pick one with "
            "--layer and --head)"
        )
    if cfg.stages and len(pairs) > MAX_STAGED:
        notes.append("the stages are drawn for the first head (pick one with --layer and --head)")
    for layer, head in pairs[:MAX_PANELS]:
        weights = captured.weights[layer][0, head]  # (T, T)
        mask = visible(subject, layer, T)
        cells = grid(weights, mask, start)
        note = f"{layer_note(subject, layer)}; {sharing(subject, head)}"
        title = f"layer {layer} head {head}"
        panels.append(
            Heatmap(title, cells, labels, keys, note=note, row_axis="query", col_axis="key")
        )
        entry: dict[str, object] = {
            "layer": layer,
            "head": head,
            "note": note,
            "keys": keys,
            "weights": cells,
        }
        if cfg.query is not None:
            row = weights[cfg.query, : cfg.query + 1].tolist()
            panels.append(
                Bars(
                    f"{title}: query {cfg.query} {names[cfg.query]!r}",
                    [f"{j} {names[j]!r}" for j in range(cfg.query + 1)],
                    row,
                )
            )
            entry["query"] = {"position": cfg.query, "weights": row}
        if cfg.stages and (len(pairs) <= MAX_STAGED or (layer, head) == pairs[0]):
            scores = captured.scores[layer][0, head]
            finite = scores[mask]
            panels.append(
                Heatmap(
                    f"{title}: 1. scores q·k/√D",
                    grid(scores, None, start),
                    labels,
                    labels,
                    lo=float(finite.min()),
                    hi=float(finite.max()),
                    note="before the mask: every pair has a score",
                    row_axis="query",
                    col_axis="key",
                )
            )
            panels.append(
                Heatmap(
                    f"{title}: 2. mask",
                    grid(mask.float(), None, start),
                    labels,
                    labels,
                    note="1: the query may see the key",
                    row_axis="query",
                    col_axis="key",
                )
            )
            entry["scores"] = grid(scores, None, start)
        data["heads"].append(entry)  # type: ignore[attr-defined]
    return ViewResult(
        "attention",
        "Attention",
        "Each heatmap is one head: row i shows how query position i spreads its attention over "
        "the positions it may see (each row sums to 1); masked cells are the future, and the "
        "keys outside a local layer's window.",
        panels,
        data,
        notes,
    )
