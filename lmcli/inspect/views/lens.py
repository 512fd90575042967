"""lens: the logit lens, what the residual stream would predict after each layer.

The residual stream after layer l, put through the model's final norm and head as if it were
the last layer, gives a next-token distribution (nostalgebraist 2020). Read down a column to see
a prediction form: the layer at which the final answer first becomes the top token, and stays.
After the last layer the lens *is* the model's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmcli.config import InspectConfig
from lmcli.inspect.capture import capturing, final_logits
from lmcli.inspect.panels import Heatmap, ViewResult
from lmcli.inspect.source import Subject, Text, as_batch, fit
from lmcli.models.transformer import Transformer

MAX_SHOWN = 32  # positions drawn (the last ones)


def lens_probs(model: Transformer, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stream (the embeddings, then each layer's output): the lens's probabilities
    (L + 1, T, V), and the model's own logits (T, V)."""
    with torch.no_grad(), capturing(model, layers=set()) as captured:
        logits, _ = model(as_batch(ids))
        stream = torch.cat(captured.stream)  # (L + 1, T, C)
        probs = F.softmax(final_logits(model, stream).double(), dim=-1)  # (L + 1, T, V)
    return probs, logits[0]


def settles(top: torch.Tensor) -> list[int]:
    """Per position, the first stream from which the top token is the final one for good."""
    final = top[-1]
    out = []
    for t in range(top.shape[1]):
        stream = top.shape[0] - 1
        while stream > 0 and top[stream - 1, t] == final[t]:
            stream -= 1
        out.append(stream)
    return out


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    model = subject.model
    assert isinstance(model, Transformer)
    ids = fit(text, model.max_positions)
    probs, _ = lens_probs(model, ids)
    best, top = probs.max(dim=-1)  # (L + 1, T) each
    start = max(0, len(ids) - MAX_SHOWN)
    streams = ["embeddings", *(f"layer {layer}" for layer in range(len(model.blocks)))]
    cols = [f"{t} {subject.token_text(ids[t])!r}" for t in range(start, len(ids))]
    values = [row[start:] for row in best.tolist()]
    labels = [[subject.token_text(int(i)) for i in row[start:]] for row in top]
    settled = settles(top)
    last = settled[-1]
    notes = list(text.notes)
    if start:
        notes.append(f"the last {MAX_SHOWN} of {len(ids)} positions are drawn")
    panel = Heatmap(
        "top prediction per layer (cell: the token, colour: its probability)",
        values,
        streams,
        cols,
        labels=labels,
        row_axis="residual stream",
        col_axis="position (predicting the next token)",
        note=f"the last position's answer {subject.token_text(int(top[-1, -1]))!r} is on top from "
        f"{'the embeddings' if last == 0 else f'layer {last - 1}'} on",
    )
    data = {
        "streams": streams,
        "positions": list(range(start, len(ids))),
        "top_ids": [row[start:] for row in top.tolist()],
        "top_tokens": labels,
        "top_probs": values,
        "settles_at": settled[start:],
    }
    return ViewResult(
        "lens",
        "Logit lens",
        "What the residual stream would predict after each layer, put through the final norm and "
        "head: read down a column to see at which layer the model's answer appears.",
        [panel],
        data,
        notes,
    )
