"""LSTM and GRU language models: the recurrent baselines the transformer is measured against.

They share the transformer's interface, so that training and sampling treat every model alike:
forward(idx, targets=None, cache=None) returns (logits, loss), and new_cache(batch_size) gives the
state a sampler carries from one call to the next (here the hidden state, there the KVCache).

Shapes: B batch, T time, E embedding size (--embedding, default C), C hidden size (--width),
L layers, V vocabulary size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError

# A GRU's hidden state is h; an LSTM's is (h, c). Each is (L, B, C).
Hidden = Tensor | tuple[Tensor, Tensor]


class RecurrentState:
    """The recurrent state after the tokens seen so far: the counterpart of a KVCache.

    The model replaces `hidden` and advances `pos` at the end of each forward.
    """

    def __init__(self, hidden: Hidden) -> None:
        self.hidden = hidden
        self.pos = 0


class RecurrentLM(nn.Module):
    """Embedding, an L-layer LSTM or GRU, dropout, a linear head to the vocabulary."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.model == "transformer":
            raise ValueError("RecurrentLM builds --model lstm or gru; use Transformer")
        self.cfg = cfg
        embedding = cfg.embedding or cfg.width
        if cfg.tie and embedding != cfg.width:
            # A projection could bridge the sizes, but then the head would not be the embedding:
            # refusing keeps --tie meaning exactly one shared matrix.
            raise ConfigError(
                f"--tie needs --embedding equal to --width (got {embedding} and {cfg.width})",
                hint="pass --no-tie, or leave --embedding unset",
            )
        self.embed = nn.Embedding(cfg.vocab_size, embedding)
        rnn = nn.LSTM if cfg.model == "lstm" else nn.GRU
        # torch's dropout acts between stacked layers only (and warns when there are none); the
        # dropout modules below cover the input and the output. The gates keep their biases
        # whatever --bias says: an LSTM's forget-gate bias is what lets it remember (see init).
        self.rnn = rnn(
            embedding,
            cfg.width,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)  # as the transformer's
        if cfg.tie:
            self.head.weight = self.embed.weight
        init_weights(self)

    @property
    def max_positions(self) -> int | None:
        """No limit: the state summarises any length (--context is only the training length)."""
        return None

    def new_cache(self, batch_size: int) -> RecurrentState:
        """The zero state for generating `batch_size` sequences with this model."""
        weight = self.embed.weight
        shape = (self.cfg.layers, batch_size, self.cfg.width)  # (L, B, C)
        h = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        return RecurrentState((h, torch.zeros_like(h)) if self.cfg.model == "lstm" else h)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: RecurrentState | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) for token ids idx (B, T), and the mean cross-entropy against targets
        (B, T) when given. With a cache, idx continues the sequence whose state it holds."""
        B, T = idx.shape
        x = self.drop(self.embed(idx))  # (B, T, E)
        out, hidden = self.rnn(x, None if cache is None else cache.hidden)  # (B, T, C)
        if cache is not None:
            cache.hidden = hidden
            cache.pos += T
        logits = self.head(self.drop(out))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    def num_params(self) -> int:
        """Every parameter once (a tied head shares the embedding's matrix)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, forward and backward: 6 per weight that multiplies an
        activation, i.e. every parameter but an untied embedding (a lookup). `seq_len` is
        accepted for the transformer's signature; a recurrent step costs the same at any length.
        """
        lookups = 0 if self.cfg.tie else self.embed.weight.numel()
        return 6 * (self.num_params() - lookups)


def init_weights(model: RecurrentLM) -> None:
    """Scales matched to the recurrent matrices, applied once by the constructor.

    - The embedding and the head ~ N(0, 1/sqrt(size)): input vectors of about unit length, on the
      scale of torch's U(-1/sqrt(C), 1/sqrt(C)) recurrent matrices (kept as they are), and first
      logits of std below 1, so the loss starts near ln V. The transformer's 0.02 feeds a norm;
      here it left the inputs too small to move the gates and trained several times slower.
    - An LSTM's forget-gate bias starts at 1 (Jozefowicz et al. 2015), so that it carries its
      cell state along until it learns what to forget.
    """
    nn.init.normal_(model.embed.weight, mean=0.0, std=model.embed.embedding_dim**-0.5)
    if model.head.weight is not model.embed.weight:
        nn.init.normal_(model.head.weight, mean=0.0, std=model.cfg.width**-0.5)
    if isinstance(model.rnn, nn.LSTM):
        C = model.cfg.width
        with torch.no_grad():
            for layer in range(model.cfg.layers):
                # torch orders an LSTM's gate biases input, forget, cell, output; the two bias
                # vectors are summed, so one carries the 1 and the other a 0.
                getattr(model.rnn, f"bias_ih_l{layer}")[C : 2 * C].fill_(1.0)
                getattr(model.rnn, f"bias_hh_l{layer}")[C : 2 * C].fill_(0.0)
