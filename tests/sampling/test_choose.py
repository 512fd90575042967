from __future__ import annotations

import numpy as np
import pytest

from lmcli.errors import ConfigError
from lmcli.sampling.choose import (
    check_settings,
    choose,
    gumbel_noise,
    top_k_filter,
    top_p_filter,
)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_temperature_zero_is_argmax() -> None:
    logits = np.random.default_rng(0).standard_normal((5, 50))
    assert np.array_equal(choose(logits, temperature=0), logits.argmax(-1))


def test_top_k_one_is_greedy() -> None:
    logits = np.random.default_rng(1).standard_normal((8, 30))
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert np.array_equal(choose(logits, 1.3, top_k=1, rng=rng), logits.argmax(-1))


def test_top_k_keeps_the_k_largest() -> None:
    logits = np.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = np.log(np.array([[0.05, 0.5, 0.3, 0.15]]))
    assert np.isfinite(top_p_filter(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.6)).tolist() == [[False, True, True, False]]
    assert np.isfinite(top_p_filter(logits, 0.8)).tolist() == [[False, True, True, False]]
    assert np.isfinite(top_p_filter(logits, 0.81)).tolist() == [[False, True, True, True]]
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_seeded_draws_repeat_and_follow_the_distribution() -> None:
    logits = np.tile(np.array([[0.0, 1.0, 2.0]]), (4000, 1))
    a = choose(logits, rng=np.random.default_rng(7))
    b = choose(logits, rng=np.random.default_rng(7))
    assert np.array_equal(a, b)
    freq = np.bincount(a, minlength=3) / len(a)
    assert np.allclose(freq, softmax(logits[0]), atol=0.03)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "message"),
    [(-0.1, None, None, "--temperature"), (1.0, 0, None, "--top-k"), (1.0, None, 0.0, "--top-p"),
     (1.0, None, 1.5, "--top-p")],
)  # fmt: skip
def test_bad_settings(temperature: float, top_k: int | None, top_p: float | None, message: str):
    with pytest.raises(ConfigError, match=message):
        check_settings(temperature, top_k, top_p)


def test_gumbel_noise_draws_follow_the_distribution_and_never_pick_filtered_tokens() -> None:
    logits = np.tile(np.array([[0.0, 1.0, 2.0, -np.inf]]), (4000, 1))
    noise = gumbel_noise((4000, 4), np.random.default_rng(3))
    assert np.isfinite(noise).all()
    drawn = choose(logits, noise=noise)
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    assert freq[3] == 0
    assert np.allclose(freq[:3], softmax(logits[0, :3]), atol=0.03)
    assert np.array_equal(noise, gumbel_noise((4000, 4), np.random.default_rng(3)))


def test_a_filter_and_the_noise_keep_only_allowed_tokens() -> None:
    logits = np.random.default_rng(2).standard_normal((64, 40))
    noise = gumbel_noise((64, 40), np.random.default_rng(0))
    picked = choose(logits, 1.0, top_k=3, noise=noise)
    allowed = np.argsort(-logits, axis=-1)[:, :3]
    assert (allowed == picked[:, None]).any(-1).all()
