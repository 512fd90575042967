"""Choosing the next token from logits: small pure functions, each tested on its own.

They work on numpy arrays, whatever engine computed the logits (numpy on the CPU, torch on any
device): the same logits and seed give the same tokens under both. All take logits of shape
(B, V) and return logits of the same shape (filters set what they drop to -inf) or token ids of
shape (B,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmcli.errors import ConfigError

Array = np.ndarray[Any, np.dtype[Any]]
# Below this temperature, float32 logits divided by it may overflow float64.
TINY_TEMPERATURE = 1e-200


def check_settings(
    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float = 1.0
) -> None:
    if not 0 < repetition_penalty < float("inf"):  # NaN fails this too
        raise ConfigError(
            f"--repetition-penalty must be a positive number (got {repetition_penalty})",
            hint="1 is off; 1.1-1.3 discourages repeats",
        )
    if not temperature >= 0:  # NaN fails this too
        raise ConfigError(f"--temperature must be at least 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top-p must be in (0, 1] (got {top_p})")


def top_k_filter(logits: Array, k: int) -> Array:
    """Keep the k largest logits of each row (ties at the k-th value are kept too)."""
    if k >= logits.shape[-1]:
        return logits
    cut = logits.shape[-1] - k
    kth = np.partition(logits, cut, axis=-1)[..., cut : cut + 1]  # (B, 1): the k-th largest
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: Array, p: float) -> Array:
    """Keep the smallest set of tokens whose probabilities sum to at least p (nucleus)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")  # (B, V), most likely first
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(sorted_logits - sorted_logits[..., :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    # A token is dropped when the tokens before it already reach p (to within rounding: 0.5 + 0.3
    # of probabilities read back from logits may sum to 0.7999999999999999).
    before = np.cumsum(probs, axis=-1) - probs  # (B, V)
    drop = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(drop, order, before >= p * (1.0 - 1e-9), axis=-1)  # back to vocabulary order
    return np.where(drop, -np.inf, logits)


def penalize_repeats(logits: Array, seen: Array, penalty: float) -> Array:
    """CTRL's repetition penalty (Keskar et al. 2019, as Hugging Face and litgpt apply it):
    the logit of each token already seen (`seen`, a (B, V) mask) is divided by `penalty` where
    it is positive and multiplied by it where negative, so above 1 a seen token always becomes
    less likely."""
    if penalty == 1.0:
        return logits
    penalized = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalized, logits)


def gumbel_noise(shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    """Gumbel(0, 1) noise: argmax(logits + noise) is a draw from softmax(logits)."""
    # 1 - uniform lies in (0, 1]: its log is finite, so a filtered token's -inf stays -inf.
    return -np.log(-np.log1p(-rng.random(shape, dtype=np.float64)) + 1e-300)


def filtered(
    logits: Array, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> Array:
    """logits / temperature (float64, temperature > 0) after the top-k and top-p filters: the
    distribution `choose` draws from is their softmax (`lmcli inspect next` draws it)."""
    scaled = logits.astype(np.float64)
    if temperature < TINY_TEMPERATURE:
        # logits / T could overflow: shifted so that each row's largest logit is 0, every other
        # one goes to -inf (the greedy limit), never to inf - inf = NaN.
        scaled -= scaled.max(axis=-1, keepdims=True)
        with np.errstate(over="ignore"):
            scaled /= temperature
    else:
        scaled /= temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    return scaled


def choose(
    logits: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    noise: Array | None = None,
    rng: np.random.Generator | None = None,
) -> Array:
    """Next token ids (B,) from logits (B, V): greedy at temperature 0, else a draw from the
    softmax of logits / temperature after the top-k and top-p filters (the Gumbel-max trick:
    argmax of logits plus Gumbel noise, from `noise` (B, V) or else drawn from `rng`)."""
    if temperature == 0:
        return logits.argmax(axis=-1)  # (B,)
    scaled = filtered(logits, temperature, top_k, top_p)
    if noise is None:
        noise = gumbel_noise(scaled.shape, rng if rng is not None else np.random.default_rng())
    return (scaled + noise).argmax(axis=-1)  # (B,)
