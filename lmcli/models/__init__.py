"""The networks: a decoder-only transformer and the LSTM/GRU baselines, built from a ModelConfig.

Every model has the same interface, so that training and sampling treat them alike:

    logits, loss = model(idx, targets)    # idx, targets: (B, T) token ids; logits: (B, T, V)
    cache = model.new_cache(batch_size)   # KVCache or RecurrentState
    logits, _ = model(prompt, cache=cache)
    logits, _ = model(next_ids, cache=cache)   # continues: same logits as a full recompute
    model.max_positions                   # how far a cache may go: the context, or None
    model.num_params(), model.flops_per_token(seq_len)
"""

from __future__ import annotations

from typing import TypeAlias

from lmcli.config import ModelConfig
from lmcli.models.recurrent import RecurrentLM, RecurrentState
from lmcli.models.transformer import KVCache, Transformer

LanguageModel: TypeAlias = Transformer | RecurrentLM
Cache: TypeAlias = KVCache | RecurrentState

__all__ = [
    "Cache",
    "KVCache",
    "LanguageModel",
    "RecurrentLM",
    "RecurrentState",
    "Transformer",
    "build_model",
]


def build_model(cfg: ModelConfig) -> LanguageModel:
    """Validate the config and build its model, initialised and on the CPU in float32."""
    cfg.validate()
    if cfg.model == "transformer":
        return Transformer(cfg)
    return RecurrentLM(cfg)
