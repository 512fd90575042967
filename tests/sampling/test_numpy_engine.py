"""The numpy engine computes what the torch models compute, for every architecture variant."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lmcli.config import ModelConfig, SampleConfig
from lmcli.models import LanguageModel, build_model
from lmcli.sampling.generate import generate
from lmcli.sampling.numpy_engine import NumpyEngine, build_engine

VOCAB, CONTEXT = 40, 16
TINY = ModelConfig(vocab_size=VOCAB, layers=2, width=32, heads=4, context=CONTEXT)
VARIANTS = {
    "rope-rmsnorm-gelu": TINY,
    "sliding-window-layers": replace(TINY, window=5, window_pattern="SL"),
    "grouped-query-learned-layernorm-post-bias": replace(
        TINY, kv_heads=2, pos="learned", norm="layernorm", norm_placement="post", bias=True
    ),
    "sinusoidal-swiglu": replace(TINY, pos="sinusoidal", mlp="swiglu"),
    "rope-layernorm-bias": replace(TINY, norm="layernorm", bias=True),
    "no-positions-relu2-multi-query-untied": replace(
        TINY, pos="none", mlp="relu2", kv_heads=1, tie=False
    ),
    "lstm": ModelConfig(model="lstm", vocab_size=VOCAB, layers=2, width=32),
    "gru-untied-embedding": ModelConfig(
        model="gru", vocab_size=VOCAB, layers=1, width=32, embedding=24, tie=False
    ),
}


def pair(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> tuple[LanguageModel, NumpyEngine]:
    """A torch model with spread-out logits (weights x 4) and the numpy engine of its weights."""
    torch.manual_seed(0)
    model = build_model(cfg).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, NumpyEngine(build_engine(cfg, weights))


@pytest.mark.parametrize("name", VARIANTS)
def test_prefill_and_steps_give_the_torch_logits(name: str) -> None:
    model, engine = pair(VARIANTS[name])
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)[0].numpy()  # (B, T, V)
    got = [engine.start(idx[:, :5].numpy())]  # a prompt of 5 in one forward
    got += [engine.step(idx[:, t].numpy()) for t in range(5, 12)]  # then one at a time
    for t, logits in zip(range(4, 12), got, strict=True):
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(engine.recompute(idx.numpy()), full[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["sliding-window-layers", "lstm"])
@pytest.mark.parametrize("window", [None, 7])
def test_the_cache_gives_the_tokens_of_a_full_recompute(name: str, window: int | None) -> None:
    _, engine = pair(VARIANTS[name])
    cfg = SampleConfig(
        max_new_tokens=3 * CONTEXT, temperature=1.0, top_k=None, num_samples=2,
        context_window=window,
    )  # fmt: skip
    cached = np.stack(list(generate(engine, [3, 1, 4], cfg)), 1)
    full = np.stack(list(generate(engine, [3, 1, 4], cfg, use_cache=False)), 1)
    assert np.array_equal(cached, full)


@pytest.mark.parametrize("name", ["rope-rmsnorm-gelu", "gru-untied-embedding"])
def test_numpy_and_torch_engines_generate_the_same_tokens(name: str) -> None:
    # float64 weights: the two engines' rounding differences cannot flip a draw.
    model, engine = pair(VARIANTS[name], torch.float64)
    cfg = SampleConfig(max_new_tokens=2 * CONTEXT, temperature=0.9, top_k=None, seed=5)
    from_torch = np.stack(list(generate(model, [3, 1, 4], cfg)), 1)
    from_numpy = np.stack(list(generate(engine, [3, 1, 4], cfg)), 1)
    assert np.array_equal(from_torch, from_numpy)
