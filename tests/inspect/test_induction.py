"""The heads view finds an induction head where one exists and none where none can: a 2-layer
model trained on repeated random segments grows one (the score of its best head, calibrated:
~0.86 after 3,000 steps), a 1-layer model cannot (a single layer cannot compose a
previous-token head with a content match; calibrated: ~0.11)."""

from __future__ import annotations

import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.inspect.capture import capturing
from lmcli.inspect.views.heads import copy_losses, head_scores
from lmcli.models import build_model

V, HALF, T = 32, 12, 32
STEPS = 3000
THRESHOLD = 0.4  # between the two calibrated scores, far from each


def segments(g: torch.Generator, batch: int) -> torch.Tensor:
    """Random tokens in which a random segment (4 to 12 tokens) repeats after a random gap: a
    fixed offset cannot predict the repeat (a positional shortcut would), only the content can."""
    half = int(torch.randint(4, HALF + 1, (1,), generator=g))
    gap = int(torch.randint(0, T + 1 - 2 * half, (1,), generator=g))
    seq = torch.randint(0, V, (batch, T + 1), generator=g)
    seq[:, gap + half : gap + 2 * half] = seq[:, :half]
    return seq


def trained(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(vocab_size=V, layers=layers, width=64, heads=2, context=T))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(STEPS):
        ids = segments(g, 32)
        _, loss = model(ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def probe_scores(model: torch.nn.Module, layers: int) -> tuple[float, float, float]:
    """The best induction score, and the loss on the probe's first and second copy."""
    first = torch.randint(0, V, (8, HALF), generator=torch.Generator().manual_seed(123))
    probe = torch.cat([first, first], dim=1)
    with torch.no_grad(), capturing(model) as captured:  # type: ignore[arg-type]
        logits, _ = model(probe)
    best = max(
        float(head_scores(captured.weights[i], HALF)["induction"].max()) for i in range(layers)
    )
    return (best, *copy_losses(logits, probe, HALF))


@pytest.mark.slow
def test_two_layers_grow_an_induction_head_and_one_layer_does_not() -> None:
    score, first, second = probe_scores(trained(2), 2)
    assert score > THRESHOLD and second < 0.5 * first, (score, first, second)
    score, first, second = probe_scores(trained(1), 1)
    assert score < THRESHOLD and second > 0.7 * first, (score, first, second)
