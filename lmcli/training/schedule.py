"""Schedules over the budget. The learning rate: linear warmup, then a decay to
lr * min_lr_ratio: a cosine over the whole budget, or (decay_fraction) the peak held and a
linear decay over the budget's last part. The training sequence length (seq_warmup): shorter
sequences first, then the model's context.

Progress through the decay is measured against the budget: steps (max_steps), training seconds
(max_time), or whichever is further along when both are set. A time budget makes the decay end
exactly when the time does, whatever speed the machine runs at.
"""

from __future__ import annotations

import math

from lmcli.config import TrainConfig, parse_seq_warmup
from lmcli.errors import ConfigError

# With no budget at all (train until Ctrl-C), the cosine spans this many steps.
OPEN_ENDED_STEPS = 5000


def progress(cfg: TrainConfig, step: int, seconds: float) -> float:
    """Fraction of the budget used, in [0, 1]."""
    parts = []
    if cfg.max_steps is not None:
        parts.append(step / cfg.max_steps)
    if cfg.max_time is not None:
        parts.append(seconds / cfg.max_time)
    if not parts:
        parts.append(step / OPEN_ENDED_STEPS)
    return min(1.0, max(parts))


def learning_rate(cfg: TrainConfig, step: int, seconds: float) -> float:
    """The rate for optimiser step `step` (0-based) after `seconds` of training."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    done = progress(cfg, step, seconds)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.decay_fraction is not None:
        # Warmup-stable-decay (as the modded-nanoGPT speedruns use): the peak until the decay
        # starts, then a straight line to the floor at the end of the budget.
        left = (1.0 - done) / cfg.decay_fraction
        return floor + (cfg.lr - floor) * min(1.0, left)
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * done))


def check_seq_warmup(cfg: TrainConfig, context: int) -> None:
    """Refuse a --seq-warmup length shorter than the context that does not divide it: the rows
    of a window must all be that long. A length at or past the context is no restriction."""
    if cfg.seq_warmup is None:
        return
    for length, _ in parse_seq_warmup(cfg.seq_warmup):
        if length < context and context % length:
            raise ConfigError(
                f"--seq-warmup's length {length} does not divide --context {context}",
                hint="each training window is cut into context / length rows: choose lengths "
                "that divide the context, or --seq-warmup none",
            )


def seq_len(cfg: TrainConfig, context: int, step: int, seconds: float) -> int:
    """The training sequence length of optimiser step `step`: context, or a --seq-warmup
    stage's shorter length while the budget has not reached that stage's fraction.

    Early on a model learns mostly local statistics, which short sequences teach as well, and
    a short sequence's attention costs less per token: so more steps fit in a time budget.
    """
    if cfg.seq_warmup is None:
        return context
    done = progress(cfg, step, seconds)
    for length, until in parse_seq_warmup(cfg.seq_warmup):
        if done < until:
            return min(length, context)
    return context
