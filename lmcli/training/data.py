"""Batches from token files: random training windows, fixed validation windows.

Training windows start at random offsets drawn from a generator seeded by (seed, rank, step,
micro-batch), so a resumed run sees exactly the batches a straight run would.
Validation always uses the same windows: every non-overlapping context-length window of the
validation split, so "val loss" is over (nearly) the whole split and comparable across runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch


class TrainBatches:
    """Random (x, y) windows of `context` tokens; y is x shifted by one.

    Micro-batch `micro` of step `step` on DDP rank `rank` is drawn from a generator seeded by
    those numbers alone: the data position is the step, so resuming at step N draws exactly the
    batches a straight run draws there, with no generator state to save.
    """

    def __init__(
        self, tokens: np.ndarray, batch_size: int, context: int, seed: int, rank: int = 0
    ) -> None:
        self.tokens = tokens
        self.batch_size = batch_size
        self.context = context
        self.seed = seed
        self.rank = rank
        self._offsets = torch.arange(context + 1)

    def get(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"{self.seed}:{self.rank}:{step}:{micro}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        generator = torch.Generator().manual_seed(seed)
        high = len(self.tokens) - self.context - 1
        starts = torch.randint(0, high + 1, (self.batch_size,), generator=generator)
        index = (starts[:, None] + self._offsets).numpy()  # (B, T+1)
        window = torch.from_numpy(self.tokens[index].astype(np.int64))  # (B, T+1)
        return window[:, :-1], window[:, 1:]  # (B, T) each


def val_windows(
    tokens: np.ndarray, context: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every non-overlapping window of the split, in order, `batch_size` at a time."""
    n_windows = (len(tokens) - 1) // context
    for first in range(0, n_windows, batch_size):
        count = min(batch_size, n_windows - first)
        start = first * context
        x = np.asarray(tokens[start : start + count * context], dtype=np.int64)
        y = np.asarray(tokens[start + 1 : start + 1 + count * context], dtype=np.int64)
        yield torch.from_numpy(x).view(count, context), torch.from_numpy(y).view(count, context)


def val_token_count(tokens: np.ndarray, context: int) -> int:
    return (len(tokens) - 1) // context * context
