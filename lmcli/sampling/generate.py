"""Generating tokens: the prompt in one forward, then one token per forward with a cache.

`generate` yields the new token ids of every sample, (B,), one step at a time, so that a caller
can show text as it comes. It drives an Engine (sampling/engines): decode.c or the numpy LSTM/GRU
on the CPU, the torch models on any device. A transformer
keeps the keys and values of the positions it has seen in a cache and runs one position per
step; an LSTM/GRU carries its recurrent state. The `use_cache=False` path recomputes a full
forward over the conditioning tokens at every step, as nanoGPT's sample.py does: it exists to be
compared with (tests, benchmarks).

The window. The model conditions on at most W tokens (--context-window; a transformer's context
by default, unbounded for an LSTM/GRU unless given). When the sequence would exceed W tokens, the
oldest are dropped so that the newest W - W // 4 remain, and generation goes on from there: the
model always sees between 3W/4 and W of the most recent tokens once past W. With a cache this
means a fresh cache (positions restart at 0; a recurrent state restarts from zero) filled with
the kept tokens in one forward, once every W // 4 + 1 tokens. Sliding by one token instead
would need that full forward at every step, ~W times the work of a cached step, since a
transformer's positions (and an RNN's state) cannot drop their oldest token in place. Both paths
condition on the same tokens at the same positions, so for a seed they give the same tokens.

Randomness comes from one numpy Generator seeded by --seed, drawn ahead as Gumbel noise
(sampling/choose.py) on the CPU: a seed repeats on any device and engine, and a shorter run
gives a prefix of a longer one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, cast

import numpy as np

from lmcli.config import ModelConfig, SampleConfig
from lmcli.errors import ConfigError
from lmcli.machine import check_memory
from lmcli.sampling.choose import Array, choose, gumbel_noise, penalize_repeats
from lmcli.weights import mlp_hidden

# Noise is drawn for this many steps at a time, fewer when a step's noise (batch x vocab) is
# large; the chunk size depends on batch and vocabulary only, so a seed's draws never change
# with --max-new-tokens.
NOISE_STEPS = 64
NOISE_FLOATS = 1 << 22


class Engine(Protocol):
    """What generation needs of a network; every array is numpy on the CPU."""

    @property
    def max_positions(self) -> int | None: ...  # a transformer's context; None for an RNN

    @property
    def vocab_size(self) -> int: ...

    @property
    def config(self) -> ModelConfig: ...

    def start(self, tokens: Array) -> Array:
        """Logits (B, V) after tokens (B, T) from an empty cache or zero state, which it keeps."""
        ...

    def step(self, tokens: Array) -> Array:
        """Logits (B, V) after appending tokens (B,) to what start and step have seen."""
        ...

    def recompute(self, tokens: Array) -> Array:
        """Logits (B, V) after tokens (B, T) by a full forward that keeps nothing."""
        ...


def decode_memory(cfg: ModelConfig, batch: int, positions: int) -> int:
    """Bytes decoding holds besides the weights, for `batch` samples and a forward over
    `positions` tokens at once (a prompt or a refill): position tables, the KV cache or the
    recurrent state, and that forward's activations and attention scores (float32)."""
    if cfg.model != "transformer":
        return 4 * batch * (cfg.layers * 2 * cfg.width + positions * 4 * cfg.width)
    D = cfg.width // cfg.heads
    qk = cfg.width + cfg.n_kv_heads * D
    tables = 4 * cfg.context * 2 * qk if cfg.pos == "rope" else 4 * cfg.context * cfg.width
    cache = 4 * 2 * cfg.layers * batch * cfg.n_kv_heads * D * cfg.context
    scores = 4 * batch * cfg.heads * positions * positions
    activations = 4 * batch * positions * (8 * cfg.width + 3 * mlp_hidden(cfg) + cfg.vocab_size)
    return tables + cache + scores + activations


def check_decode_memory(cfg: ModelConfig, batch: int, prompt: int, new_tokens: int) -> None:
    """Refuse a generation the machine cannot hold, before anything is allocated: the engine's
    arrays, and the tokens kept (the sequence and the output, int64 each)."""
    positions = prompt if cfg.model != "transformer" else min(prompt, cfg.context)
    need = decode_memory(cfg, batch, positions) + 3 * 8 * batch * (prompt + new_tokens)
    check_memory(
        need,
        f"generating {new_tokens:,} tokens for {batch:,} sample{'s' * (batch != 1)}",
        hint="use fewer --num-samples or --max-new-tokens (or stream one long sample)",
    )


def resolve_window(engine: Engine, requested: int | None) -> int | None:
    """The tokens the model may condition on: --context-window, at most the model's context."""
    limit = engine.max_positions
    if requested is None:
        return limit
    if limit is not None and requested > limit:
        raise ConfigError(
            f"--context-window {requested} is larger than the model's context ({limit} tokens)",
            hint=f"use --context-window {limit} or less",
        )
    return requested


def generate(
    engine: Engine | Any, prompt: Sequence[int], cfg: SampleConfig, use_cache: bool = True
) -> Iterator[Array]:
    """Yield cfg.max_new_tokens steps of new token ids (B,), B = cfg.num_samples. The settings
    are checked here, before the first step. A torch model is wrapped in a TorchEngine."""
    if not hasattr(engine, "start"):
        from lmcli.sampling.engines.torch_engine import TorchEngine

        engine = TorchEngine(cast(Any, engine))  # a torch model
    engine = cast(Engine, engine)
    cfg.validate()
    if len(prompt) == 0:
        raise ConfigError(
            "the prompt is empty: the model needs at least one token to continue",
            hint="give some text with --prompt (the default is a newline)",
        )
    window = resolve_window(engine, cfg.context_window)
    check_decode_memory(engine.config, cfg.num_samples, len(prompt), cfg.max_new_tokens)
    decoder = _Decoder(engine, prompt, cfg, window, use_cache)
    return _steps(decoder, cfg.max_new_tokens)


def _steps(decoder: _Decoder, count: int) -> Iterator[Array]:
    token = decoder.first()
    yield token
    for _ in range(count - 1):
        token = decoder.next(token)
        yield token


class _Noise:
    """Gumbel noise for each step, drawn ahead in chunks."""

    def __init__(self, seed: int, batch: int, vocab: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape = (max(1, min(NOISE_STEPS, NOISE_FLOATS // (batch * vocab))), batch, vocab)
        self.chunk = np.empty(0)
        self.used = self.shape[0]

    def next(self) -> Array:
        if self.used == self.shape[0]:
            self.chunk = gumbel_noise(self.shape, self.rng)
            self.used = 0
        self.used += 1
        return self.chunk[self.used - 1]  # (B, V)


class _Decoder:
    """The conditioning tokens and one step of generation.

    `seq` holds the prompt and every new token; the model conditions on seq[:, start:end].
    """

    def __init__(
        self,
        engine: Engine,
        prompt: Sequence[int],
        cfg: SampleConfig,
        window: int | None,
        use_cache: bool,
    ) -> None:
        self.engine, self.cfg, self.use_cache = engine, cfg, use_cache
        # (W, tokens kept when the sequence passes W), or None: never slide.
        self.slide = None if window is None else (window, window - window // 4)
        batch = cfg.num_samples
        self.seq = np.empty((batch, len(prompt) + cfg.max_new_tokens), dtype=np.int64)
        self.seq[:, : len(prompt)] = np.asarray(prompt, dtype=np.int64)
        self.start, self.end = 0, len(prompt)
        if self.slide is not None and self.end > self.slide[0]:
            self.start = self.end - self.slide[1]  # a long prompt: its newest tokens
        self.noise = None if cfg.temperature == 0 else _Noise(cfg.seed, batch, engine.vocab_size)
        self.seen: Array | None = None  # (B, V): the tokens in the sequence, for the penalty
        if cfg.repetition_penalty != 1.0:
            self.seen = np.zeros((batch, engine.vocab_size), dtype=bool)
            self.seen[:, np.asarray(prompt, dtype=np.int64)] = True

    def first(self) -> Array:
        """The first new token (B,), after the prompt's forward."""
        return self._choose(self._refill())

    def next(self, token: Array) -> Array:
        """Append `token` (B,) to the sequence and choose the one after it."""
        self.seq[:, self.end] = token
        self.end += 1
        if self.seen is not None:
            self.seen[np.arange(len(token)), token] = True
        if self.slide is not None and self.end - self.start > self.slide[0]:
            self.start = self.end - self.slide[1]
            logits = self._refill()
        elif self.use_cache:
            logits = self.engine.step(token)  # (B, V)
        else:
            logits = self._refill()
        return self._choose(logits)

    def _refill(self) -> Array:
        """Logits (B, V) after a forward over all of seq[:, start:end] from an empty cache."""
        ctx = self.seq[:, self.start : self.end]  # (B, T)
        return self.engine.start(ctx) if self.use_cache else self.engine.recompute(ctx)

    def _choose(self, logits: Array) -> Array:
        cfg = self.cfg
        if self.seen is not None:
            logits = penalize_repeats(logits, self.seen, cfg.repetition_penalty)
        noise = None if self.noise is None else self.noise.next()
        return choose(logits, cfg.temperature, cfg.top_k, cfg.top_p, noise=noise)  # (B,)
