"""Learning-rate schedule: linear warmup, then a decay to lr * min_lr_ratio: a cosine over the
whole budget, or (decay_fraction) the peak held and a linear decay over the budget's last part.

Progress through the decay is measured against the budget: steps (max_steps), training seconds
(max_time), or whichever is further along when both are set. A time budget makes the decay end
exactly when the time does, whatever speed the machine runs at.
"""

from __future__ import annotations

import math

from lmcli.config import TrainConfig

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
