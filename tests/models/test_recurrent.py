"""The LSTM and GRU baselines: causality, carried state, tying, parameter counts, learning."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError
from lmcli.models import RecurrentLM, RecurrentState, build_model

VOCAB = 50
LENGTH = 16


@pytest.fixture(params=["lstm", "gru"])
def tiny(request: pytest.FixtureRequest) -> ModelConfig:
    return ModelConfig(model=request.param, vocab_size=VOCAB, layers=2, width=32, context=LENGTH)


def build(cfg: ModelConfig, seed: int = 0) -> RecurrentLM:
    torch.manual_seed(seed)
    model = build_model(cfg)
    assert isinstance(model, RecurrentLM)
    return model.double().eval()


def tokens(batch: int = 2, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


def test_changing_a_token_leaves_earlier_logits_unchanged(tiny: ModelConfig) -> None:
    model = build(tiny)
    idx = tokens()
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :8], after[:, :8], rtol=0, atol=1e-12)
    assert not torch.allclose(before[:, 8], after[:, 8])


def test_carried_state_equals_full_recompute(tiny: ModelConfig) -> None:
    model = build(tiny)
    idx = tokens(length=LENGTH + 4)  # no context limit: the state summarises any length
    assert model.max_positions is None
    cache = model.new_cache(batch_size=2)
    assert isinstance(cache, RecurrentState)
    steps = [(0, 5), (5, 8)] + [(t, t + 1) for t in range(8, LENGTH + 4)]
    with torch.no_grad():
        full = model(idx)[0]
        pieces = [model(idx[:, a:b], cache=cache)[0] for a, b in steps]
    assert cache.pos == LENGTH + 4
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_tied_head_shares_the_embedding(tiny: ModelConfig) -> None:
    tied = build(tiny)
    assert tied.head.weight is tied.embed.weight
    untied = build(replace(tiny, tie=False))
    assert untied.head.weight is not untied.embed.weight
    assert untied.num_params() == tied.num_params() + VOCAB * 32


def test_a_tied_head_needs_the_embedding_size_to_equal_the_width(tiny: ModelConfig) -> None:
    with pytest.raises(ConfigError, match="--tie needs --embedding equal to --width"):
        build_model(replace(tiny, embedding=16))
    untied = build(replace(tiny, embedding=16, tie=False))
    assert untied.embed.weight.shape == (VOCAB, 16)
    assert untied(tokens())[0].shape == (2, LENGTH, VOCAB)


def test_parameter_count_matches_a_hand_count(tiny: ModelConfig) -> None:
    gates = 4 if tiny.model == "lstm" else 3  # LSTM: input, forget, cell, output; GRU: 3
    E = C = 32
    # Per layer: input and recurrent matrices, and torch's two bias vectors.
    layer = gates * C * (E + C) + 2 * gates * C
    expected = VOCAB * E + 2 * layer  # embedding, two layers; the head is tied
    assert expected == {"lstm": 18496, "gru": 14272}[tiny.model]
    model = build(tiny)
    assert model.num_params() == expected
    assert model.flops_per_token() == 6 * expected


def test_lstm_forget_gate_bias_starts_at_one() -> None:
    model = build(ModelConfig(model="lstm", vocab_size=VOCAB, layers=2, width=32))
    total = model.rnn.bias_ih_l1 + model.rnn.bias_hh_l1
    assert torch.all(total[32:64] == 1.0)


def test_recurrent_models_learn(tiny: ModelConfig, overfit) -> None:
    losses = overfit(tiny, LENGTH, lr=3e-2)
    assert losses[0] > 2.5
    assert losses[-1] < 0.5
