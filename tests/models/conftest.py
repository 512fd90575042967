"""Shared by the model tests: learning one repeated sentence."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.models import build_model

SENTENCE = "the quick brown fox jumps over the lazy dog. " * 4


def overfit_losses(cfg: ModelConfig, length: int, lr: float, steps: int = 50) -> list[float]:
    """Training losses of a fresh model fitting windows of SENTENCE with AdamW."""
    vocab = sorted(set(SENTENCE))
    ids = torch.tensor([vocab.index(ch) for ch in SENTENCE])
    torch.manual_seed(0)
    model = build_model(replace(cfg, vocab_size=len(vocab)))
    starts = torch.arange(0, len(ids) - length - 1, 4)
    x = torch.stack([ids[s : s + length] for s in starts])  # (B, T)
    y = torch.stack([ids[s + 1 : s + length + 1] for s in starts])  # (B, T), shifted by one
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        assert loss is not None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def overfit():
    return overfit_losses
