"""The trained networks again, in numpy, for decoding on the CPU without torch.

Why a second implementation: one generated token of a small model is ~70 tiny operations, and on
a CPU each torch operation costs ~5-10 us of dispatch against ~1-2 us for numpy, which also
imports in a tenth of a second where `import torch` takes seconds. This engine is inference only
(no dropout, no gradients), reads weights from the checkpoint through lmcli.torchfile, and
computes what lmcli/models compute: tests/sampling/test_numpy_engine.py checks its logits
against the torch models for every architecture variant. Read models/transformer.py for the why
of each layer; this file only mirrors it.

Shapes as there: B batch, T new positions, S positions in the cache, C width, H query heads,
K kv heads, G = H / K query heads per kv head, D head size, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError, InputError

ROPE_BASE = 10000.0
NORM_EPS = 1e-5

Array = np.ndarray[Any, np.dtype[Any]]


def build_engine(cfg: ModelConfig, weights: dict[str, Any]) -> NumpyTransformer | NumpyRecurrent:
    """The numpy network for a checkpoint's config and its state dict (numpy arrays)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    try:
        if cfg.model == "transformer":
            return NumpyTransformer(cfg, arrays)
        return NumpyRecurrent(cfg, arrays)
    except KeyError as exc:
        raise InputError(
            f"the checkpoint lacks the weight {exc.args[0]!r} its config needs"
        ) from None


def _erf(x: Array) -> Array:
    """erf to float32 precision (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none,
    and torch's GELU is the exact, erf-based one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: Array) -> Array:
    return 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))


def _sigmoid(x: Array) -> Array:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # never overflows, unlike 1 / (1 + exp(-x))


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _Norm:
    def __init__(self, kind: str, w: dict[str, Array], prefix: str) -> None:
        self.layer = kind == "layernorm"
        self.weight = w[prefix + ".weight"]
        self.bias = w.get(prefix + ".bias")
        # Means as a product with a (C, 1) column of 1/C: BLAS beats ndarray.mean's dispatch.
        size = self.weight.shape[0]
        self.average = np.full((size, 1), 1.0 / size, dtype=self.weight.dtype)

    def __call__(self, x: Array) -> Array:
        if self.layer:
            x = x - x @ self.average
        scale = 1.0 / np.sqrt((x * x) @ self.average + NORM_EPS)
        y = x * scale * self.weight
        return y if self.bias is None else y + self.bias


class _Linear:
    """y = x W^T + b with W^T stored contiguously, applied to x flattened to 2-D: numpy hands a
    2-D product with contiguous operands to BLAS, but loops by itself over a stacked one."""

    def __init__(self, weight: Array, bias: Array | None) -> None:
        self.weight_t = np.ascontiguousarray(weight.T)  # (in, out)
        self.bias = bias

    def __call__(self, x: Array) -> Array:
        y = x.reshape(-1, x.shape[-1]) @ self.weight_t
        if self.bias is not None:
            y += self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


class _Block:
    """One block's weights: (weight, bias or None) per linear layer, and its two norms."""

    def __init__(self, cfg: ModelConfig, w: dict[str, Array], p: str) -> None:
        self.norm1 = _Norm(cfg.norm, w, p + "norm1")
        self.norm2 = _Norm(cfg.norm, w, p + "norm2")
        self.qkv = _Linear(w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        self.proj = _Linear(w[p + "attn.proj.weight"], w.get(p + "attn.proj.bias"))
        self.fc = _Linear(w[p + "mlp.fc.weight"], w.get(p + "mlp.fc.bias"))
        self.out = _Linear(w[p + "mlp.proj.weight"], w.get(p + "mlp.proj.bias"))


class NumpyKVCache:
    """As models.transformer.KVCache: keys and values of every position so far, per layer."""

    def __init__(self, layers: int, batch: int, kv_heads: int, context: int, head_dim: int) -> None:
        shape = (batch, kv_heads, context, head_dim)  # (B, K, context, D)
        self.k = [np.zeros(shape, np.float32) for _ in range(layers)]
        self.v = [np.zeros(shape, np.float32) for _ in range(layers)]
        self.pos = 0


class NumpyTransformer:
    def __init__(self, cfg: ModelConfig, w: dict[str, Array]) -> None:
        self.cfg = cfg
        self.heads, self.kv_heads = cfg.heads, cfg.n_kv_heads
        self.head_dim = cfg.width // cfg.heads
        self.windows = cfg.layer_windows()
        self.wte = w["wte.weight"]
        self.head = _Linear(w.get("head.weight", self.wte), None)
        self.positions: Array | None = None  # (context, C), added to the embedding
        if cfg.pos == "learned":
            self.positions = w["wpe.weight"]
        elif cfg.pos == "sinusoidal":
            inv = 10000.0 ** (-np.arange(0, cfg.width, 2, dtype=np.float32) / cfg.width)
            angles = np.outer(np.arange(cfg.context, dtype=np.float32), inv).astype(np.float32)
            table = np.zeros((cfg.context, cfg.width), np.float32)
            table[:, 0::2] = np.sin(angles)
            table[:, 1::2] = np.cos(angles)[:, : cfg.width // 2]
            self.positions = table
        self.rope: tuple[Array, Array] | None = None
        if cfg.pos == "rope":
            d = self.head_dim
            inv = ROPE_BASE ** (-np.arange(0, d, 2, dtype=np.float32) / d)
            angles = np.outer(np.arange(cfg.context, dtype=np.float32), inv.astype(np.float32))
            self.rope = (np.cos(angles), np.sin(angles))  # (context, D/2) each
        q_size, kv_size = cfg.width, self.kv_heads * self.head_dim
        self.split = (q_size, q_size + kv_size)
        self.layers = [_Block(cfg, w, f"blocks.{i}.") for i in range(cfg.layers)]
        self.norm = _Norm(cfg.norm, w, "norm") if cfg.norm_placement == "pre" else None

    @property
    def max_positions(self) -> int:
        return self.cfg.context

    def new_cache(self, batch: int) -> NumpyKVCache:
        cfg = self.cfg
        return NumpyKVCache(cfg.layers, batch, self.kv_heads, cfg.context, self.head_dim)

    def forward(self, idx: Array, cache: NumpyKVCache) -> Array:
        """Logits (B, V) of the last of the positions idx (B, T) adds to the cache."""
        T = idx.shape[1]
        pos, end = cache.pos, cache.pos + T
        if end > self.cfg.context:
            raise ConfigError(f"{end} positions exceed --context {self.cfg.context}")
        x = self.wte[idx]  # (B, T, C)
        if self.positions is not None:
            x = x + self.positions[pos:end]
        rope = None if self.rope is None else (self.rope[0][pos:end], self.rope[1][pos:end])
        for i, (layer, window) in enumerate(zip(self.layers, self.windows, strict=True)):
            if self.cfg.norm_placement == "pre":
                x = x + self._attention(layer.norm1(x), layer, i, window, rope, cache)
                x = x + self._mlp(layer.norm2(x), layer)
            else:
                x = layer.norm1(x + self._attention(x, layer, i, window, rope, cache))
                x = layer.norm2(x + self._mlp(x, layer))
        cache.pos = end
        last = x[:, -1]  # (B, C): only the next token's logits are needed
        if self.norm is not None:
            last = self.norm(last)
        return self.head(last)  # (B, V)

    def _attention(
        self,
        x: Array,
        layer: _Block,
        index: int,
        window: int | None,
        rope: tuple[Array, Array] | None,
        cache: NumpyKVCache,
    ) -> Array:
        B, T, C = x.shape
        H, K, D = self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(x)  # (B, T, H*D + 2*K*D)
        q = qkv[..., : self.split[0]].reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
        k = qkv[..., self.split[0] : self.split[1]].reshape(B, T, K, D).transpose(0, 2, 1, 3)
        v = qkv[..., self.split[1] :].reshape(B, T, K, D).transpose(0, 2, 1, 3)  # (B, K, T, D)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        pos, end = cache.pos, cache.pos + T
        cache.k[index][:, :, pos:end] = k
        cache.v[index][:, :, pos:end] = v
        first = 0 if window is None or T > 1 else max(0, end - window)  # one query: no mask
        keys = cache.k[index][:, :, first:end]  # (B, K, S, D)
        values = cache.v[index][:, :, first:end]  # (B, K, S, D)
        G = H // K
        q = q.reshape(B, K, G * T, D)  # query heads of a group read the same kv head
        scores = (q @ keys.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(D))  # (B, K, G*T, S)
        if T > 1:
            qpos = np.tile(np.arange(pos, end), G)[:, None]  # (G*T, 1)
            kpos = np.arange(first, end)[None, :]  # (1, S)
            allowed = kpos <= qpos
            if window is not None:
                allowed &= kpos > qpos - window
            scores = np.where(allowed, scores, -np.inf)
        y = _softmax(scores) @ values  # (B, K, G*T, D)
        y = y.reshape(B, H, T, D).transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
        return layer.proj(y)

    def _mlp(self, x: Array, layer: _Block) -> Array:
        h = layer.fc(x)
        if self.cfg.mlp == "gelu":
            h = _gelu(h)
        elif self.cfg.mlp == "relu2":
            h = np.square(np.maximum(h, 0.0))
        else:
            gate, up = np.split(h, 2, axis=-1)
            h = gate * _sigmoid(gate) * up  # silu(gate) * up
        return layer.out(h)


def _rotate(x: Array, cos: Array, sin: Array) -> Array:
    """RoPE as models.transformer.apply_rotary: channel pairs (i, i + D/2) turned by angle."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate((x1 * cos - x2 * sin, x1 * sin + x2 * cos), axis=-1)


class NumpyState:
    """As models.recurrent.RecurrentState: h (and an LSTM's c), (L, B, C) each."""

    def __init__(self, h: Array, c: Array | None) -> None:
        self.h, self.c = h, c
        self.pos = 0


class NumpyRecurrent:
    def __init__(self, cfg: ModelConfig, w: dict[str, Array]) -> None:
        self.cfg = cfg
        self.lstm = cfg.model == "lstm"
        self.embed = w["embed.weight"]
        self.head = _Linear(w.get("head.weight", self.embed), None)
        self.layers = [
            (
                _Linear(w[f"rnn.weight_ih_l{i}"], w[f"rnn.bias_ih_l{i}"]),
                _Linear(w[f"rnn.weight_hh_l{i}"], w[f"rnn.bias_hh_l{i}"]),
            )
            for i in range(cfg.layers)
        ]

    @property
    def max_positions(self) -> None:
        return None

    def new_cache(self, batch: int) -> NumpyState:
        h = np.zeros((self.cfg.layers, batch, self.cfg.width), np.float32)
        return NumpyState(h, np.zeros_like(h) if self.lstm else None)

    def forward(self, idx: Array, state: NumpyState) -> Array:
        """Logits (B, V) after feeding idx (B, T) to the state, which it advances."""
        for t in range(idx.shape[1]):
            x = self.embed[idx[:, t]]  # (B, E)
            for i, (input_gates, hidden_gates) in enumerate(self.layers):
                if self.lstm:
                    assert state.c is not None
                    gates = input_gates(x) + hidden_gates(state.h[i])  # (B, 4C)
                    i_g, f_g, g_g, o_g = np.split(gates, 4, axis=-1)  # torch's gate order
                    state.c[i] = _sigmoid(f_g) * state.c[i] + _sigmoid(i_g) * np.tanh(g_g)
                    state.h[i] = _sigmoid(o_g) * np.tanh(state.c[i])
                else:
                    r_x, z_x, n_x = np.split(input_gates(x), 3, axis=-1)  # (B, C) each
                    r_h, z_h, n_h = np.split(hidden_gates(state.h[i]), 3, axis=-1)
                    r, z = _sigmoid(r_x + r_h), _sigmoid(z_x + z_h)
                    n = np.tanh(n_x + r * n_h)
                    state.h[i] = (1.0 - z) * n + z * state.h[i]
                x = state.h[i]
        state.pos += idx.shape[1]
        return self.head(state.h[-1])  # (B, V): the top layer's output after the last token


class NumpyEngine:
    """Generation's Engine (sampling/generate.py) over a numpy network."""

    def __init__(self, net: NumpyTransformer | NumpyRecurrent) -> None:
        self.net = net
        self.cache: NumpyKVCache | NumpyState | None = None

    @property
    def max_positions(self) -> int | None:
        return self.net.max_positions

    @property
    def vocab_size(self) -> int:
        return self.net.cfg.vocab_size

    def start(self, tokens: Array) -> Array:
        self.cache = self.net.new_cache(tokens.shape[0])
        return self.net.forward(tokens, self.cache)  # type: ignore[arg-type]

    def step(self, tokens: Array) -> Array:
        return self.net.forward(tokens[:, None], self.cache)  # type: ignore[arg-type]

    def recompute(self, tokens: Array) -> Array:
        return self.net.forward(tokens, self.net.new_cache(tokens.shape[0]))  # type: ignore[arg-type]
