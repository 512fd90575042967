"""The transformer: equivalences between its paths, shapes, parameter counts, and that it learns."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError
from lmcli.models import KVCache, Transformer, build_model

VOCAB = 50
CONTEXT = 16


@pytest.fixture
def tiny() -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB, layers=2, width=32, heads=4, context=CONTEXT, window_pattern="SL"
    )


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """An eval-mode float64 model, so that equal computations agree to ~1e-12."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    assert isinstance(model, Transformer)
    return model.double().eval()


def tokens(batch: int = 2, length: int = CONTEXT, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


def logits_of(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0]


VARIANTS = list(
    itertools.product(
        ["learned", "sinusoidal", "rope", "none"],
        ["layernorm", "rmsnorm"],
        ["pre", "post"],
        ["gelu", "swiglu", "relu2"],
        [None, 2],
        [None, 4],
    )
)


@pytest.mark.parametrize(("pos", "norm", "placement", "mlp", "kv_heads", "window"), VARIANTS)
def test_changing_a_token_leaves_earlier_logits_unchanged(
    tiny: ModelConfig, pos, norm, placement, mlp, kv_heads, window
) -> None:
    cfg = replace(tiny, pos=pos, norm=norm, norm_placement=placement, mlp=mlp, kv_heads=kv_heads)
    model = build(replace(cfg, window=window))
    idx = tokens()
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    before, after = logits_of(model, idx), logits_of(model, changed)
    torch.testing.assert_close(before[:, :8], after[:, :8], rtol=0, atol=1e-12)
    assert not torch.allclose(before[:, 8], after[:, 8])


@pytest.mark.parametrize("impl", ["sdpa", "naive"])
def test_grouped_query_equals_multi_head_with_each_kv_head_repeated(
    tiny: ModelConfig, impl
) -> None:
    gqa = build(replace(tiny, kv_heads=2))
    mha = build(replace(tiny, kv_heads=4))
    state = gqa.state_dict()
    H, K, D, C = 4, 2, 8, 32
    for layer in range(tiny.layers):
        name = f"blocks.{layer}.attn.qkv.weight"
        q, k, v = state[name].split([H * D, K * D, K * D])
        # Query head h reads kv head h // (H / K): repeat each kv head's rows H / K times.
        k, v = (t.view(K, D, C).repeat_interleave(H // K, dim=0).reshape(H * D, C) for t in (k, v))
        state[name] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    gqa.set_attention_impl(impl)
    mha.set_attention_impl(impl)
    idx = tokens()
    torch.testing.assert_close(logits_of(gqa, idx), logits_of(mha, idx))


def test_kv_heads_equal_to_heads_is_multi_head(tiny: ModelConfig) -> None:
    default, explicit = build(tiny), build(replace(tiny, kv_heads=tiny.heads))
    torch.testing.assert_close(logits_of(default, tokens()), logits_of(explicit, tokens()))


def test_multi_query_attention_runs_and_learns(tiny: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(replace(tiny, kv_heads=1))
    assert isinstance(model, Transformer)
    # q has 4 heads of 8, k and v one head of 8 each.
    assert model.blocks[0].attn.qkv.weight.shape == (4 * 8 + 2 * 8, 32)
    idx = tokens()
    logits, loss = model(idx, idx)
    assert logits.shape == (2, CONTEXT, VOCAB)
    assert loss is not None
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("window", [CONTEXT, 10])
@pytest.mark.parametrize("impl", ["sdpa", "naive"])
def test_a_window_at_least_the_sequence_equals_full_attention(
    tiny: ModelConfig, window, impl
) -> None:
    local = build(replace(tiny, window=window, window_pattern="S"))
    full = build(tiny)
    local.set_attention_impl(impl)
    full.set_attention_impl(impl)
    idx = tokens(length=10)
    torch.testing.assert_close(logits_of(local, idx), logits_of(full, idx))


@pytest.mark.parametrize("impl", ["sdpa", "naive"])
@pytest.mark.parametrize(("layers", "reach"), [(1, 4), (2, 7)])
def test_local_layers_see_only_their_window(tiny: ModelConfig, impl, layers, reach) -> None:
    # With W = 4, position t sees t-3 .. t; stacking two local layers reaches t-6 .. t.
    model = build(replace(tiny, layers=layers, window=4, window_pattern="S"))
    model.set_attention_impl(impl)
    idx = tokens()
    changed = idx.clone()
    changed[:, 0] = (changed[:, 0] + 1) % VOCAB
    before, after = logits_of(model, idx), logits_of(model, changed)
    torch.testing.assert_close(before[:, reach:], after[:, reach:], rtol=0, atol=1e-12)
    assert not torch.allclose(before[:, reach - 1], after[:, reach - 1])


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("kv_heads", [None, 2, 1])
@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_sdpa_equals_naive_attention(tiny: ModelConfig, window, kv_heads, pos) -> None:
    model = build(replace(tiny, window=window, kv_heads=kv_heads, pos=pos))
    idx = tokens()
    fused = logits_of(model, idx)
    model.set_attention_impl("naive")
    torch.testing.assert_close(fused, logits_of(model, idx))


def test_unknown_attention_impl_is_refused(tiny: ModelConfig) -> None:
    with pytest.raises(ValueError, match="unknown attention"):
        build(tiny).set_attention_impl("flash")  # type: ignore[arg-type]


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "none"])
@pytest.mark.parametrize("length", [1, 5, CONTEXT])
def test_every_position_kind_gives_logits_per_position(tiny: ModelConfig, pos, length) -> None:
    model = build(replace(tiny, pos=pos))
    assert logits_of(model, tokens(length=length)).shape == (2, length, VOCAB)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "none"])
def test_sequences_longer_than_the_context_are_refused(tiny: ModelConfig, pos) -> None:
    # Learned and sinusoidal tables have no row past the context; rope's tables and the masks
    # are built for it too, and the model never trained at longer range.
    model = build(replace(tiny, pos=pos))
    with pytest.raises(ConfigError, match="--context 16"):
        model(tokens(length=CONTEXT + 1))


def test_position_tables_are_buffers_outside_the_state_dict(tiny: ModelConfig) -> None:
    assert "wpe.weight" in build(replace(tiny, pos="learned")).state_dict()
    for pos in ("sinusoidal", "rope", "none"):
        keys = build(replace(tiny, pos=pos)).state_dict().keys()
        assert not any("wpe" in k or "rope" in k or "sinusoid" in k or "mask" in k for k in keys)


def test_tied_head_shares_the_embedding(tiny: ModelConfig) -> None:
    model = build(replace(tiny, tie=True))
    assert model.head.weight is model.wte.weight
    untied = build(replace(tiny, tie=False))
    assert untied.head.weight is not untied.wte.weight
    assert untied.num_params() == model.num_params() + VOCAB * 32


def test_parameter_count_of_a_gpt2_style_config(tiny: ModelConfig) -> None:
    cfg = replace(tiny, pos="learned", norm="layernorm", mlp="gelu", tie=True, bias=False)
    C, V, T = 32, VOCAB, CONTEXT
    block = C + C * 3 * C + C * C + C + C * 4 * C + 4 * C * C  # norm, qkv, proj, norm, fc, proj
    expected = V * C + T * C + 2 * block + C  # tokens, positions, blocks, final norm; tied head
    assert expected == 26848
    assert build(cfg).num_params() == expected


def test_parameter_count_of_a_llama_style_config(tiny: ModelConfig) -> None:
    cfg = replace(tiny, pos="rope", norm="rmsnorm", mlp="swiglu", kv_heads=2, tie=False)
    C, V, D = 32, VOCAB, 8
    hidden = 88  # 8/3 * 32 = 85.3, rounded up to a multiple of 8
    qkv = C * (4 + 2 * 2) * D  # 4 query heads, 2 key and 2 value heads
    block = C + qkv + C * C + C + C * 2 * hidden + hidden * C
    expected = V * C + 2 * block + C + C * V  # tokens, blocks, final norm, untied head
    assert expected == 26400
    assert build(cfg).num_params() == expected


def test_flops_per_token_counts_matmul_weights_and_attention_span(tiny: ModelConfig) -> None:
    cfg = replace(tiny, pos="learned", window=4, window_pattern="SL")
    model = build(cfg)
    weights = model.num_params() - CONTEXT * 32  # the learned positions are a lookup
    attention = 12 * 32 * 4 + 12 * 32 * CONTEXT  # one local layer (span W), one global (span T)
    assert model.flops_per_token() == 6 * weights + attention


def test_initial_loss_is_near_uniform_and_residual_projections_are_scaled(
    tiny: ModelConfig,
) -> None:
    torch.manual_seed(0)
    model = build_model(replace(tiny, layers=8, bias=True, tie=False))
    assert isinstance(model, Transformer)
    idx = tokens()
    _, loss = model(idx, tokens(seed=2))
    assert loss is not None
    assert abs(loss.item() - math.log(VOCAB)) < 0.1
    proj_std = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks]).std().item()
    assert proj_std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert all(b.mlp.fc.bias.abs().sum() == 0 for b in model.blocks)


CACHE_VARIANTS = {
    "global": {},
    "sliding-window": {"window": 4, "window_pattern": "SL"},
    "all-local": {"window": 3, "window_pattern": "S"},
    "grouped-query": {"kv_heads": 2, "window": 5},
    "multi-query": {"kv_heads": 1},
    "learned-post-norm": {"pos": "learned", "norm_placement": "post"},
    "sinusoidal": {"pos": "sinusoidal", "window": 4},
}


@pytest.mark.parametrize("impl", ["sdpa", "naive"])
@pytest.mark.parametrize("variant", CACHE_VARIANTS)
def test_kv_cache_generation_equals_full_recompute(tiny: ModelConfig, variant, impl) -> None:
    model = build(replace(tiny, **CACHE_VARIANTS[variant]))
    model.set_attention_impl(impl)
    idx = tokens()
    full = logits_of(model, idx)
    cache = model.new_cache(batch_size=2)
    assert isinstance(cache, KVCache)
    steps = [(0, 5), (5, 8)] + [(t, t + 1) for t in range(8, CONTEXT)]  # prompt, chunk, tokens
    with torch.no_grad():
        pieces = [model(idx[:, a:b], cache=cache)[0] for a, b in steps]
    assert cache.pos == CONTEXT
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_kv_cache_refuses_to_go_past_the_context(tiny: ModelConfig) -> None:
    model = build(tiny)
    cache = model.new_cache(batch_size=2)
    with torch.no_grad():
        model(tokens(), cache=cache)
        with pytest.raises(ConfigError, match="17 positions exceed --context 16"):
            model(tokens(length=1), cache=cache)


def test_dropout_acts_only_in_training(tiny: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(replace(tiny, dropout=0.5))
    idx = tokens()
    first, second = model(idx)[0], model(idx)[0]
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])


def test_a_tiny_transformer_overfits_one_sentence(tiny: ModelConfig, overfit) -> None:
    losses = overfit(tiny, CONTEXT, lr=1e-2)
    assert losses[0] > 2.5
    assert losses[-1] < 0.3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 5}, "--heads must divide --width"),
        ({"heads": 0}, "--heads must be at least 1"),
        ({"kv_heads": 3}, "--kv-heads must divide --heads"),
        ({"kv_heads": 0}, "--kv-heads must divide --heads"),
        ({"window": CONTEXT + 1}, "--window must be between 1 and --context"),
        ({"window": 0}, "--window must be between 1 and --context"),
        ({"window": 4, "window_pattern": "SX"}, "--window-pattern"),
        ({"window": 4, "window_pattern": ""}, "--window-pattern"),
        ({"width": 24, "heads": 8}, "--pos rope needs an even head size"),
        ({"layers": 0}, "--layers must be at least 1"),
        ({"dropout": 1.0}, "--dropout"),
        ({"embedding": 16}, "--embedding applies to --model lstm or gru"),
    ],
)
def test_invalid_configs_are_refused(tiny: ModelConfig, overrides, message) -> None:
    cfg = replace(tiny, **overrides)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)
