"""Choosing the next token from logits: small pure functions, each tested on its own.

All take logits of shape (B, V) and return logits of the same shape (filters set what they drop
to -inf) or token ids of shape (B,).

Draws use the Gumbel-max trick: argmax(logits + G), with G = -log(E) and E ~ Exponential(1)
independent per token, picks token i with probability softmax(logits)_i, exactly as a draw from
the softmax does. It needs no softmax and no torch.multinomial (whose checks cost more than the
draw for one sequence), and the noise can be drawn ahead, on the CPU, from a seeded generator:
the same seed then gives the same noise on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmcli.errors import ConfigError


def check_settings(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ConfigError(f"--temperature must be at least 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top-p must be in (0, 1] (got {top_p})")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept too)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of tokens whose probabilities sum to at least p (nucleus)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the tokens before it already reach p.
    before = torch.cumsum(probs, dim=-1) - probs  # (B, V)
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Gumbel(0, 1) noise of `shape`, on the generator's device (the CPU for a CPU generator)."""
    device = generator.device if generator is not None else None
    e = torch.empty(shape, device=device).exponential_(generator=generator)
    # exponential_ returns 0 with probability ~2^-24; -log(0) = inf would turn a filtered token's
    # -inf into nan. The clamp keeps every G finite (at most ~69).
    return e.clamp_(min=1e-30).log_().neg_()


def choose(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Next token ids (B,) from logits (B, V): greedy at temperature 0, else a draw from the
    softmax of logits / temperature after the top-k and top-p filters.

    `noise` is Gumbel noise (B, V) on the logits' device (see gumbel_noise); without it, noise is
    drawn from `generator` for this call."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if noise is None:
        noise = gumbel_noise(tuple(logits.shape), generator).to(logits.device)
    return (logits + noise).argmax(dim=-1)  # (B,)
