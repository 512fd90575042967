"""The step memory count: exact for parameters, gradients and AdamW state; activations grow
with the batch."""

from __future__ import annotations

import torch

from lmcli.config import ModelConfig, TrainConfig
from lmcli.models import build_model
from lmcli.training.memory import step_memory
from lmcli.training.optim import build_optimizer


def test_counts_parameters_gradients_and_adamw_state_exactly() -> None:
    cfg = ModelConfig(vocab_size=50, layers=2, width=32, heads=4, context=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, TrainConfig(optimizer="adamw"), torch.device("cpu"))
    x = torch.randint(0, 50, (4, 16))
    small = step_memory(model, optimizer, x, x)
    weights = 4 * model.num_params()  # float32; a tied head is one storage
    assert small.parameters == weights and small.gradients == weights
    assert small.optimizer >= 2 * weights  # two moments per weight (and a step counter each)
    x8 = torch.randint(0, 50, (8, 16))
    big = step_memory(model, optimizer, x8, x8)
    assert 1.8 * small.activations < big.activations < 2.2 * small.activations
    assert big.total == big.parameters + big.gradients + big.optimizer + big.activations
