from __future__ import annotations

import pytest
import torch

from lmcli.errors import ConfigError
from lmcli.sampling.choose import (
    check_settings,
    choose,
    gumbel_noise,
    top_k_filter,
    top_p_filter,
)


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(5, 50)
    assert torch.equal(choose(logits, temperature=0), logits.argmax(-1))


def test_top_k_one_is_greedy() -> None:
    logits = torch.randn(8, 30)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(choose(logits, 1.3, top_k=1, generator=g), logits.argmax(-1))


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.6)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


def test_seeded_draws_repeat_and_follow_the_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(4000, 1)
    a = choose(logits, generator=torch.Generator().manual_seed(7))
    b = choose(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=3).float() / len(a)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.03)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "message"),
    [(-0.1, None, None, "--temperature"), (1.0, 0, None, "--top-k"), (1.0, None, 0.0, "--top-p"),
     (1.0, None, 1.5, "--top-p")],
)  # fmt: skip
def test_bad_settings(temperature: float, top_k: int | None, top_p: float | None, message: str):
    with pytest.raises(ConfigError, match=message):
        check_settings(temperature, top_k, top_p)


def test_gumbel_noise_draws_follow_the_distribution_and_never_pick_filtered_tokens() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, float("-inf")]]).repeat(4000, 1)
    noise = gumbel_noise((4000, 4), torch.Generator().manual_seed(3))
    assert torch.isfinite(noise).all()
    drawn = choose(logits, noise=noise)
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert freq[3] == 0
    assert torch.allclose(freq[:3], torch.softmax(logits[0, :3], -1), atol=0.03)
    again = gumbel_noise((4000, 4), torch.Generator().manual_seed(3))
    assert torch.equal(noise, again)


def test_a_filter_and_the_noise_keep_only_allowed_tokens() -> None:
    logits = torch.randn(64, 40)
    noise = gumbel_noise((64, 40), torch.Generator().manual_seed(0))
    picked = choose(logits, 1.0, top_k=3, noise=noise)
    allowed = torch.topk(logits, 3, dim=-1).indices
    assert (allowed == picked[:, None]).any(-1).all()
