"""Validation: mean loss over every non-overlapping window of the validation split, and the same
in bits per byte, the unit that compares models whatever their tokenizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lmcli.training.data import val_windows


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy per token, in nats
    perplexity: float
    bits_per_byte: float
    tokens: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    context: int,
    bytes_per_token: float,
    device: torch.device,
    autocast_dtype: torch.dtype,
    batch_size: int = 64,
) -> Evaluation:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in val_windows(tokens, context, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
            _, loss = model(x, y)
        total += loss.double() * y.numel()
        count += y.numel()
    model.train(was_training)
    mean = total.item() / max(count, 1)
    return Evaluation(
        loss=mean,
        perplexity=math.exp(min(mean, 700.0)),
        bits_per_byte=mean / math.log(2) / bytes_per_token,
        tokens=count,
    )


@torch.no_grad()
def loss_by_position(
    model: nn.Module,
    tokens: np.ndarray,
    context: int,
    device: torch.device,
    autocast_dtype: torch.dtype,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean validation loss (nats) at each position 0..T-1 of a window, over the windows
    `evaluate` uses: position t predicts its token from t + 1 tokens of context. How fast the
    curve falls with t shows how much a model gains from longer context. Its mean is
    `evaluate`'s loss."""
    was_training = model.training
    model.eval()
    total = torch.zeros(context, dtype=torch.float64, device=device)  # (T,)
    windows = 0
    for x, y in val_windows(tokens, context, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
            logits, _ = model(x)  # (B, T, V)
        losses = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, T)
        total += losses.double().sum(dim=0)
        windows += y.shape[0]
    model.train(was_training)
    return (total / max(windows, 1)).cpu().numpy()
