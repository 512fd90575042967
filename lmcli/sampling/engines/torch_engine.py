"""Generation's Engine over the torch models: on any device, and the CPU fallback when decode.c
cannot be compiled. The models themselves keep the cache (KVCache or RecurrentState); logits
come back to the CPU as numpy for lmcli/sampling/choose.py."""

from __future__ import annotations

import numpy as np
import torch

from lmcli.config import ModelConfig
from lmcli.models import Cache, KVCache, LanguageModel
from lmcli.sampling.choose import Array


class TorchEngine:
    def __init__(self, model: LanguageModel) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.cache: Cache | None = None

    @property
    def max_positions(self) -> int | None:
        return self.model.max_positions

    @property
    def vocab_size(self) -> int:
        return self.model.cfg.vocab_size

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

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
        ids = self._ids(tokens).view(-1, 1)  # (B, 1)
        return self._out(self.model(ids, cache=self.cache)[0][:, -1])

    @torch.inference_mode()
    def recompute(self, tokens: Array) -> Array:
        return self._out(self.model(self._ids(tokens))[0][:, -1])
