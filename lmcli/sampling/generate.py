"""Generating tokens: the prompt in one forward, then one token per forward with a cache.

`generate` yields the new token ids of every sample, (B,), one step at a time, so that a caller
can show text as it comes. A transformer keeps the keys and values of the positions it has seen
in a KVCache and runs one position per step (through sampling/step.py, the same computation
without nn.Module dispatch); an LSTM/GRU carries its recurrent state. The
`use_cache=False` path recomputes a full forward over the conditioning tokens at every step, as
nanoGPT's sample.py does: it exists to be compared with (tests, benchmarks).

The window. The model conditions on at most W tokens (--context-window; a transformer's context
by default, unbounded for an LSTM/GRU unless given). When the sequence would exceed W tokens, the
oldest are dropped so that the newest W - W // 4 remain, and generation goes on from there: the
model always sees between 3W/4 and W of the most recent tokens once past W. With a cache this
means a fresh cache (positions restart at 0; a recurrent state restarts from zero) filled with
the kept tokens in one forward, once every W // 4 + 1 tokens. Sliding by one token instead
would need that full forward at every step, ~W times the work of a cached step, since a
transformer's positions (and an RNN's state) cannot drop their oldest token in place. Both paths
condition on the same tokens at the same positions, so for a seed they give the same tokens.

Randomness comes from one CPU torch.Generator seeded by --seed, drawn ahead as Gumbel noise
(sampling/choose.py) and moved to the model's device: a seed repeats on any device, and a
shorter run gives a prefix of a longer one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lmcli.config import SampleConfig
from lmcli.errors import ConfigError
from lmcli.models import KVCache, LanguageModel, Transformer
from lmcli.sampling.choose import choose, gumbel_noise
from lmcli.sampling.step import TransformerStep

# Noise is drawn for this many steps at a time, fewer when a step's noise (batch x vocab) is
# large; the chunk size depends on batch and vocabulary only, so a seed's draws never change
# with --max-new-tokens.
NOISE_STEPS = 64
NOISE_FLOATS = 1 << 22


def resolve_window(model: LanguageModel, requested: int | None) -> int | None:
    """The tokens the model may condition on: --context-window, at most the model's context."""
    limit = model.max_positions
    if requested is None:
        return limit
    if limit is not None and requested > limit:
        raise ConfigError(
            f"--context-window {requested} is larger than the model's context ({limit} tokens)",
            hint=f"use --context-window {limit} or less",
        )
    return requested


def generate(
    model: LanguageModel, prompt: Sequence[int], cfg: SampleConfig, use_cache: bool = True
) -> Iterator[Tensor]:
    """Yield cfg.max_new_tokens steps of new token ids (B,), B = cfg.num_samples, on the model's
    device. The settings are checked here, before the first step."""
    cfg.validate()
    if len(prompt) == 0:
        raise ConfigError(
            "the prompt is empty: the model needs at least one token to continue",
            hint="give some text with --prompt (the default is a newline)",
        )
    window = resolve_window(model, cfg.context_window)
    decoder = _Decoder(model, prompt, cfg, window, use_cache)
    return _steps(decoder, cfg.max_new_tokens)


def _steps(decoder: _Decoder, count: int) -> Iterator[Tensor]:
    token = decoder.first()
    yield token
    for _ in range(count - 1):
        token = decoder.next(token)
        yield token


class _Noise:
    """Gumbel noise for each step, drawn ahead in chunks on the CPU and moved to the device."""

    def __init__(self, seed: int, batch: int, vocab: int, device: torch.device) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.shape = (max(1, min(NOISE_STEPS, NOISE_FLOATS // (batch * vocab))), batch, vocab)
        self.device = device
        self.chunk = torch.empty(0)
        self.used = self.shape[0]

    def next(self) -> Tensor:
        if self.used == self.shape[0]:
            self.chunk = gumbel_noise(self.shape, self.generator).to(self.device)
            self.used = 0
        self.used += 1
        return self.chunk[self.used - 1]  # (B, V)


class _Decoder:
    """The conditioning tokens, the cache, and one step of generation.

    `seq` holds the prompt and every new token; the model conditions on seq[:, start:end]. Each
    step runs under inference_mode (entered per call: a generator suspended inside the context
    would leave it on for its caller).
    """

    def __init__(
        self,
        model: LanguageModel,
        prompt: Sequence[int],
        cfg: SampleConfig,
        window: int | None,
        use_cache: bool,
    ) -> None:
        self.model, self.cfg = model, cfg
        # (W, tokens kept when the sequence passes W), or None: never slide.
        self.slide = None if window is None else (window, window - window // 4)
        self.device = next(model.parameters()).device
        batch = cfg.num_samples
        with torch.inference_mode():
            self.seq = torch.empty(  # (B, P + N)
                batch, len(prompt) + cfg.max_new_tokens, dtype=torch.long, device=self.device
            )
            self.seq[:, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
            self.cache = model.new_cache(batch) if use_cache else None
        # A transformer's one-position steps skip nn.Module dispatch (sampling/step.py).
        self.step = (
            TransformerStep(model)
            if use_cache and isinstance(model, Transformer) and not model.training
            else None
        )
        self.start, self.end = 0, len(prompt)
        if self.slide is not None and self.end > self.slide[0]:
            self.start = self.end - self.slide[1]  # a long prompt: its newest tokens
        self.noise = (
            None
            if cfg.temperature == 0
            else _Noise(cfg.seed, batch, model.cfg.vocab_size, self.device)
        )

    @torch.inference_mode()
    def first(self) -> Tensor:
        """The first new token (B,), after the prompt's forward."""
        return self._choose(self._refill())

    @torch.inference_mode()
    def next(self, token: Tensor) -> Tensor:
        """Append `token` (B,) to the sequence and choose the one after it."""
        self.seq[:, self.end] = token
        self.end += 1
        if self.slide is not None and self.end - self.start > self.slide[0]:
            self.start = self.end - self.slide[1]
            logits = self._refill()
        elif self.step is not None:
            logits = self.step(token, self.cache)  # type: ignore[arg-type]  # (B, V)
        elif self.cache is not None:
            logits = self.model(token.view(-1, 1), cache=self.cache)[0][:, -1]  # (B, V)
        else:
            logits = self._refill()
        return self._choose(logits)

    def _refill(self) -> Tensor:
        """Logits (B, V) after a forward over all of seq[:, start:end] from an empty cache."""
        ctx = self.seq[:, self.start : self.end]  # (B, T)
        if self.cache is None:
            return self.model(ctx)[0][:, -1]  # (B, V)
        if isinstance(self.cache, KVCache):
            self.cache.pos = 0  # positions restart; old keys are overwritten before being read
        else:
            self.cache = self.model.new_cache(ctx.size(0))
        return self.model(ctx, cache=self.cache)[0][:, -1]  # (B, V)

    def _choose(self, logits: Tensor) -> Tensor:
        cfg = self.cfg
        noise = None if self.noise is None else self.noise.next()
        return choose(logits, cfg.temperature, cfg.top_k, cfg.top_p, noise=noise)  # (B,)
