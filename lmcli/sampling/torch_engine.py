"""Generation's Engine over the torch models, on any device (the numpy engine is CPU-only).

A transformer's one-position steps go through sampling/step.py (the same computation without
nn.Module dispatch); logits come back to the CPU as numpy for sampling/choose.py.
"""

from __future__ import annotations

import numpy as np
import torch

from lmcli.config import ModelConfig
from lmcli.models import Cache, LanguageModel, Transformer
from lmcli.models.transformer import KVCache
from lmcli.sampling.choose import Array
from lmcli.sampling.step import TransformerStep


class TorchEngine:
    def __init__(self, model: LanguageModel) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache: Cache | None = None
        self.fast_step = (
            TransformerStep(model)
            if isinstance(model, Transformer) and not model.training
            else None
        )

    @property
    def max_positions(self) -> int | None:
        return self.model.max_positions

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def vocab_size(self) -> int:
        return self.model.cfg.vocab_size

    def _ids(self, tokens: Array) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)

    @staticmethod
    def _out(logits: torch.Tensor) -> Array:
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def start(self, tokens: Array) -> Array:
        ids = self._ids(tokens)  # (B, T)
        if isinstance(self.cache, KVCache) and self.cache.k[0].size(0) == ids.size(0):
            self.cache.pos = 0  # positions restart; old keys are overwritten before being read
        else:
            self.cache = self.model.new_cache(ids.size(0))
        return self._out(self.model(ids, cache=self.cache)[0][:, -1])

    @torch.inference_mode()
    def step(self, tokens: Array) -> Array:
        ids = self._ids(tokens)  # (B,)
        if self.fast_step is not None and isinstance(self.cache, KVCache):
            return self._out(self.fast_step(ids, self.cache))
        return self._out(self.model(ids.view(-1, 1), cache=self.cache)[0][:, -1])

    @torch.inference_mode()
    def recompute(self, tokens: Array) -> Array:
        return self._out(self.model(self._ids(tokens))[0][:, -1])
