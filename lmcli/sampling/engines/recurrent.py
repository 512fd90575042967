"""torch.nn.LSTM / GRU one token at a time in numpy: the CPU engine of the recurrent baselines.

A recurrent step is a few small products that numpy's BLAS runs at once, with no torch import
(seconds) and no module dispatch; it is what models/recurrent.py computes, in eval mode, on
the weights of its safetensors file. tests/sampling/test_engines.py holds its logits to the
torch model's.

The sigmoid gates' rows are pre-scaled by 1/2 (exactly, a power of two): one tanh over all gates
then gives tanh itself where a tanh is wanted and sigmoid(z) = (1 + tanh(z/2)) / 2 elsewhere.

Shapes: B samples, T tokens, E embedding size, C hidden size, L layers, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmcli.config import ModelConfig
from lmcli.weights import Weights

Array = np.ndarray[Any, np.dtype[Any]]


class RecurrentEngine:
    """Generation's Engine (lmcli/sampling/generate.py) over an LSTM or GRU's weights."""

    def __init__(self, weights: Weights) -> None:
        cfg, w = weights.config, weights.arrays
        self.cfg = cfg
        self.lstm = cfg.model == "lstm"
        C = cfg.width
        self.embed = w["embed.weight"]  # (V, E)
        self.head_t = np.ascontiguousarray(w.get("head.weight", self.embed).T)  # (C, V)
        # Sigmoid gates' rows: LSTM (i, f, g, o) all but g; GRU (r, z, n) the first two.
        halve = np.full(4 * C if self.lstm else 3 * C, 0.5, np.float32)
        halve[2 * C : 3 * C] = 1.0
        self.layers = [
            tuple(
                np.ascontiguousarray(a)
                for a in (
                    w[f"rnn.weight_ih_l{i}"].T * halve,  # (in, gates)
                    w[f"rnn.bias_ih_l{i}"] * halve,
                    w[f"rnn.weight_hh_l{i}"].T * halve,  # (C, gates)
                    w[f"rnn.bias_hh_l{i}"] * halve,
                )
            )
            for i in range(cfg.layers)
        ]
        self.h = np.zeros((cfg.layers, 0, C), np.float32)  # (L, B, C)
        self.c: Array | None = None

    @property
    def max_positions(self) -> None:
        return None  # the state summarises any length

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def config(self) -> ModelConfig:
        return self.cfg

    def start(self, tokens: Array) -> Array:
        """The zero state, then tokens (B, T) fed to it: the logits (B, V) after the last."""
        B = tokens.shape[0]
        self.h = np.zeros((self.cfg.layers, B, self.cfg.width), np.float32)
        self.c = np.zeros_like(self.h) if self.lstm else None
        return self._feed(tokens)

    def step(self, tokens: Array) -> Array:
        return self._feed(tokens[:, None])

    def recompute(self, tokens: Array) -> Array:
        return self.start(tokens)  # a recurrent model has only its state to go on

    def _feed(self, idx: Array) -> Array:
        C, h, c = self.cfg.width, self.h, self.c
        w_ih, b_ih = self.layers[0][:2]
        first = self.embed[idx] @ w_ih + b_ih  # (B, T, gates): layer 0's input, every token
        for t in range(idx.shape[1]):
            x_gates = first[:, t]  # (B, gates)
            for i, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.layers):
                if i > 0:
                    x_gates = h[i - 1] @ w_ih
                    x_gates += b_ih
                h_gates = h[i] @ w_hh
                h_gates += b_hh
                if c is not None:  # LSTM
                    t_all = np.tanh(x_gates + h_gates)  # (B, 4C): i, f, o halved; g not
                    s = 0.5 * t_all + 0.5  # sigmoid of i, f, o (g's columns unused)
                    c[i] = s[:, C : 2 * C] * c[i] + s[:, :C] * t_all[:, 2 * C : 3 * C]
                    h[i] = s[:, 3 * C :] * np.tanh(c[i])
                else:  # GRU
                    t_rz = np.tanh(x_gates[:, : 2 * C] + h_gates[:, : 2 * C])  # halved r, z
                    rz = 0.5 * t_rz + 0.5  # (B, 2C)
                    n = np.tanh(x_gates[:, 2 * C :] + rz[:, :C] * h_gates[:, 2 * C :])
                    h[i] = n + rz[:, C:] * (h[i] - n)  # (1 - z) n + z h
        return h[-1] @ self.head_t  # (B, V): the top layer's output after the last token
