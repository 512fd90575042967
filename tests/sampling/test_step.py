"""The functional decoding step computes what the transformer computes, for every variant."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError
from lmcli.models import Transformer, build_model
from lmcli.sampling.step import TransformerStep

VOCAB, CONTEXT = 30, 12
TINY = ModelConfig(vocab_size=VOCAB, layers=2, width=16, heads=4, context=CONTEXT)
# Every value of every option, in 24 combinations (the full product is 6x as slow and finds
# nothing more: the options act in separate places).
KV = [(None, "SL"), (2, "SL"), (1, "S")]  # (kv heads, window pattern)
VARIANTS = [
    (pos, ["layernorm", "rmsnorm"][(i + j) % 2], placement, mlp, KV[(i + k) % 3])
    for i, pos in enumerate(["learned", "sinusoidal", "rope", "none"])
    for j, placement in enumerate(["pre", "post"])
    for k, mlp in enumerate(["gelu", "swiglu", "relu2"])
]


def build(cfg: ModelConfig) -> Transformer:
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, Transformer)
    with torch.no_grad():  # nonzero biases and norm gains, so that each one counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.double().eval()


@pytest.mark.parametrize(("pos", "norm", "placement", "mlp", "kv"), VARIANTS)
def test_each_step_gives_the_logits_and_cache_of_the_model(pos, norm, placement, mlp, kv) -> None:
    kv_heads, pattern = kv
    cfg = replace(TINY, pos=pos, norm=norm, norm_placement=placement, mlp=mlp,
                  kv_heads=kv_heads, window=3, window_pattern=pattern,
                  bias=norm == "layernorm", tie=mlp != "gelu")  # fmt: skip
    model = build(cfg)
    step = TransformerStep(model)
    ids = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(1))
    ours, theirs = model.new_cache(2), model.new_cache(2)
    with torch.no_grad():
        model(ids[:, :4], cache=ours)
        model(ids[:, :4], cache=theirs)
        for t in range(4, CONTEXT):  # past the window of the local layers
            expected = model(ids[:, t : t + 1], cache=theirs)[0][:, -1]
            torch.testing.assert_close(step(ids[:, t], ours), expected)
    assert ours.pos == theirs.pos == CONTEXT
    for mine, reference in zip(ours.k + ours.v, theirs.k + theirs.v, strict=True):
        torch.testing.assert_close(mine, reference)


def test_a_step_past_the_context_is_refused() -> None:
    model = build(TINY)
    cache = model.new_cache(1)
    with torch.no_grad():
        model(torch.zeros(1, CONTEXT, dtype=torch.long), cache=cache)
        with pytest.raises(ConfigError, match="13 positions exceed --context 12"):
            TransformerStep(model)(torch.zeros(1, dtype=torch.long), cache)


def test_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        TransformerStep(build(TINY).train())


def test_the_model_config_fields_the_step_knows() -> None:
    """TransformerStep restates the transformer's forward. A new ModelConfig field may change
    that forward: check lmcli/sampling/step.py (and its tests above) before adding it here."""
    assert [f.name for f in dataclasses.fields(ModelConfig)] == [
        "model", "vocab_size", "layers", "width", "heads", "kv_heads", "context", "pos", "norm",
        "norm_placement", "mlp", "window", "window_pattern", "dropout", "tie", "bias",
        "embedding",
    ]  # fmt: skip
