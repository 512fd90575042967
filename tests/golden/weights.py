"""The golden models' weights: drawn from numpy's PCG64 (a stream numpy keeps stable), so that
the golden continuations in continuations.json pin the forward itself, not an RNG."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lmcli.config import ModelConfig
from lmcli.models import LanguageModel, build_model
from lmcli.weights import save_weights

VOCAB, CONTEXT = 40, 16
BASE = ModelConfig(vocab_size=VOCAB, layers=2, width=32, heads=4, context=CONTEXT)
MODELS = {
    "rope-rmsnorm-gelu": BASE,
    "learned-layernorm-bias-post-swiglu": replace(
        BASE, pos="learned", norm="layernorm", bias=True, norm_placement="post", mlp="swiglu"
    ),
    "sinusoidal-gqa-window-relu2-untied": replace(
        BASE, pos="sinusoidal", kv_heads=2, window=5, window_pattern="SL", mlp="relu2", tie=False
    ),
    "lstm": ModelConfig(model="lstm", vocab_size=VOCAB, layers=2, width=32),
}
PROMPT = [3, 1, 4, 1, 5]
NEW_TOKENS = 40  # past the context: the window's refills are part of it


def golden_model(name: str, seed: int) -> LanguageModel:
    """The model `name` with every weight uniform in [-0.5, 0.5) (times 2 for 1-D gains, so
    that norms do not shrink the stream), drawn in state-dict order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    model = build_model(MODELS[name]).eval()
    with torch.no_grad():
        for _, tensor in sorted(model.state_dict().items()):
            values = rng.random(tuple(tensor.shape)) - 0.5
            tensor.copy_(torch.from_numpy(values * (2.0 if tensor.dim() == 1 else 1.0)))
    return model


def weights_digest(model: LanguageModel) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def save(model: LanguageModel, path: Path) -> Path:
    save_weights(path, model.state_dict(), model.cfg, step=0)
    return path
