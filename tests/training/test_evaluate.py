"""Validation: the loss by position in the window agrees with the mean loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.corpus.tokenfiles import TokenMeta, open_tokens
from lmcli.models import build_model
from lmcli.training.evaluate import evaluate, loss_by_position


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_loss_by_position_averages_to_the_val_loss(token_dir: Path, kind: str) -> None:
    vocab = TokenMeta.load(token_dir).vocab_size
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=kind, vocab_size=vocab, layers=1, width=16, heads=2,
                                    context=12))  # fmt: skip
    tokens = open_tokens(token_dir, "val")
    cpu = torch.device("cpu")
    curve = loss_by_position(model, tokens, 12, cpu, torch.float32, batch_size=5)
    assert curve.shape == (12,) and np.isfinite(curve).all()
    mean = evaluate(model, tokens, 12, 1.0, cpu, torch.float32, batch_size=5).loss
    assert curve.mean() == pytest.approx(mean, rel=1e-6)
    # An untrained model is near-uniform at every position: log V, give or take.
    assert np.all(np.abs(curve - np.log(vocab)) < 0.5)
