"""heads: what each attention head does, from a probe of random tokens repeated twice.

The probe is n random tokens followed by the same n again. On the first copy nothing can be
predicted (the loss is about ln V); on the second, a model that copies in context predicts every
token from the one before it. The heads that make this possible show up in the scores, each the
mean attention weight (0 to 1) on one key:
- previous-token: from position i to i - 1;
- duplicate-token: in the second copy, to the same token in the first copy (i - n);
- induction: in the second copy, to the token *after* the earlier copy of the current one
  (i - n + 1), the head that predicts "what came next last time";
- first-token: to position 0, where heads with nothing to do often rest (an attention sink).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmcli.config import InspectConfig
from lmcli.inspect.capture import capturing, check_capture_size
from lmcli.inspect.panels import Heatmap, Panel, Table, ViewResult
from lmcli.inspect.source import Subject, Text
from lmcli.models.transformer import Transformer

PROBES = 8  # random sequences averaged over
MAX_HALF = 64  # tokens per copy (fewer when the context is shorter)
SCORES = ("previous-token", "duplicate-token", "induction", "first-token")


def probe(subject: Subject, seed: int, half: int | None = None) -> torch.Tensor:
    """(PROBES, 2n) ids: n random ordinary tokens (no special token), then the same n again."""
    cfg = subject.config
    n = half if half is not None else max(2, min(MAX_HALF, cfg.context // 2))
    eot = subject.tokenizer.eot_id
    ordinary = cfg.vocab_size - (1 if eot is not None and eot == cfg.vocab_size - 1 else 0)
    rng = np.random.default_rng(seed)
    first = torch.from_numpy(rng.integers(0, ordinary, size=(PROBES, n)))
    return torch.cat([first, first], dim=1).long()  # (PROBES, 2n)


def head_scores(weights: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Each score per head, (H,), from one layer's weights (B, H, 2n, 2n) on the probe."""
    positions = torch.arange(1, 2 * n)
    second = torch.arange(n, 2 * n)
    return {
        "previous-token": weights[:, :, positions, positions - 1].mean(dim=(0, 2)),
        "duplicate-token": weights[:, :, second, second - n].mean(dim=(0, 2)),
        "induction": weights[:, :, second, second - n + 1].mean(dim=(0, 2)),
        "first-token": weights[:, :, positions, 0].mean(dim=(0, 2)),
    }


def copy_losses(logits: torch.Tensor, ids: torch.Tensor, n: int) -> tuple[float, float]:
    """Mean loss (nats) predicting the first copy's tokens 2..n, and the second copy's 2..n
    (the second copy's first token follows nothing that predicts it: left out of both)."""
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return float(losses[:, : n - 1].mean()), float(losses[:, n:].mean())  # targets 1..n-1, n+1..


def copying(first: float, second: float) -> str:
    """What the two losses say, in words."""
    ratio = f"the second copy costs {second / first:.0%} of the first"
    if second < 0.5 * first:
        return f"{ratio}: the model copies from its context"
    return f"{ratio}: no sign of in-context copying (a model that copies does far better on it)"


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    ids = probe(subject, cfg.seed)
    n = ids.shape[1] // 2
    model = subject.model
    data: dict[str, object] = {"probe_tokens": n, "probes": PROBES, "seed": cfg.seed}
    panels: list[Panel] = []
    if isinstance(model, Transformer):
        check_capture_size(model, PROBES, 2 * n, subject.config.layers, subject.config.heads)
        with torch.no_grad(), capturing(model) as captured:
            logits, _ = model(ids)
        per_layer = [head_scores(captured.weights[layer], n) for layer in range(len(model.blocks))]
        heads = [f"head {h}" for h in range(subject.config.heads)]
        layers = [f"layer {layer}" for layer in range(len(per_layer))]
        for score in SCORES:
            grid = [s[score].tolist() for s in per_layer]
            panels.append(Heatmap(score, grid, layers, heads, row_axis="layer", col_axis="head"))
            data[score] = grid
        best = max(
            ((layer, h) for layer in range(len(per_layer)) for h in range(subject.config.heads)),
            key=lambda lh: per_layer[lh[0]]["induction"][lh[1]],
        )
        data["best_induction_head"] = {
            "layer": best[0],
            "head": best[1],
            "score": float(per_layer[best[0]]["induction"][best[1]]),
        }
    else:
        with torch.no_grad():
            logits, _ = model(ids)
    first, second = copy_losses(logits, ids, n)
    uniform = math.log(subject.config.vocab_size)
    panels.append(
        Table(
            "loss on the probe (nats per token)",
            ["copy", "loss", "bits"],
            [
                ["first (unpredictable)", round(first, 3), round(first / math.log(2), 2)],
                ["second (copied)", round(second, 3), round(second / math.log(2), 2)],
                ["uniform guess", round(uniform, 3), round(uniform / math.log(2), 2)],
            ],
            note=copying(first, second),
        )
    )
    data.update({"loss_first_copy": first, "loss_second_copy": second, "uniform_loss": uniform})
    notes = (
        []
        if isinstance(model, Transformer)
        else [f"an {subject.kind} has no heads: only the probe's loss applies"]
    )
    return ViewResult(
        "heads",
        "Heads",
        f"On {n} random tokens shown twice, each head's mean attention to the previous token, to "
        "the same token in the first copy, to the token after it (an induction head) and to "
        "position 0; and the loss on each copy, in-context copying made visible.",
        panels,
        data,
        notes,
    )
