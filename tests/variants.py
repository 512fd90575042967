"""One list of architecture variants, used by every test that holds an engine (or a table of
the weights) to the torch model: positions x norms x placement x MLP x GQA/MQA x windows x tie
x bias, each value at least once, and the recurrent baselines."""

from __future__ import annotations

from dataclasses import replace

from lmcli.config import ModelConfig

VOCAB, CONTEXT = 40, 16
TINY = ModelConfig(vocab_size=VOCAB, layers=2, width=32, heads=4, context=CONTEXT)
VARIANTS: dict[str, ModelConfig] = {
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
    "learned-layernorm-gelu-bias-tied (nanoGPT)": replace(
        TINY, pos="learned", norm="layernorm", bias=True
    ),
    "rmsnorm-post-swiglu-window-all-local": replace(
        TINY, norm_placement="post", mlp="swiglu", window=3, window_pattern="S"
    ),
    "lstm": ModelConfig(model="lstm", vocab_size=VOCAB, layers=2, width=32),
    "gru-untied-embedding": ModelConfig(
        model="gru", vocab_size=VOCAB, layers=1, width=32, embedding=24, tie=False
    ),
}
TRANSFORMERS = [name for name, cfg in VARIANTS.items() if cfg.model == "transformer"]
