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
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError, InputError
from lmcli.sampling.kernel import KernelForward

ROPE_BASE = 10000.0
EPS = np.float32(1e-5)  # LayerNorm's and RMSNorm's

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


class _Gelu:
    """GELU, x * Phi(x), with Phi read from a table: numpy has no erf, and a formula for it costs
    ~20 array operations where this costs 11 (a decoding step is bound by operation count).

    Phi is tabulated at steps of 2^-10 on [-8, 8] (math.erfc, exact to float64) and interpolated
    linearly, so its error is under h^2/8 max|Phi''| < 3e-8, below float32's resolution near 1.
    Outside that range Phi is 0 or 1 to float32 precision, which clipping the input gives.
    """

    LOW, HIGH, STEP = -8.0, 8.0, 2.0**-10

    def __init__(self) -> None:
        grid = self.LOW + self.STEP * np.arange(round((self.HIGH - self.LOW) / self.STEP) + 1)
        phi = np.array([0.5 * math.erfc(-g / math.sqrt(2.0)) for g in grid])
        self.grid = grid.astype(np.float32)  # exact: multiples of 2^-10
        self.phi = phi.astype(np.float32)
        self.slope = (np.diff(phi, append=phi[-1]) / self.STEP).astype(np.float32)  # 0 at HIGH
        self.low, self.high = np.float32(self.LOW), np.float32(self.HIGH)
        self.per_step = np.float32(1.0 / self.STEP)

    def __call__(self, x: Array) -> Array:
        c = np.clip(x, self.low, self.high)
        i = ((c - self.low) * self.per_step).astype(np.intp)  # the grid point at or below c
        return x * (self.phi[i] + (c - self.grid[i]) * self.slope[i])


def _sigmoid(x: Array) -> Array:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # never overflows, unlike 1 / (1 + exp(-x))


class _Norm:
    """LayerNorm or RMSNorm with its gain (and bias): post-norm blocks need the normed stream."""

    def __init__(self, kind: str, w: dict[str, Array], prefix: str) -> None:
        self.center = kind == "layernorm"
        self.weight = w[prefix + ".weight"]
        self.bias = w.get(prefix + ".bias")
        # Means as a product with a (C, 1) column of 1/C: BLAS beats ndarray.mean's dispatch.
        size = self.weight.shape[0]
        self.average = np.full((size, 1), 1.0 / size, dtype=np.float32)

    def __call__(self, x: Array) -> Array:
        if self.center:
            x = x - x @ self.average
        y = x * (self.weight / np.sqrt((x * x) @ self.average + EPS))
        return y if self.bias is None else y + self.bias


class _NormLinear:
    """linear(norm(x)) for x (N, in), or linear(x) with norm=None, in few numpy calls.

    The norm's gain and bias are folded into the matrix and the bias once, at load: with g, b
    the norm's and W, c the linear's, (x_hat * g + b) W^T + c = x_hat (g W^T) + (b W^T + c). So
    the norm only centres (LayerNorm) and divides the product by the rms; `scale` multiplies
    output columns (attention's 1/sqrt(D) on the queries). W^T is stored contiguous: numpy hands
    a 2-D product with contiguous operands to BLAS.
    """

    def __init__(
        self,
        weight: Array,
        bias: Array | None,
        norm: _Norm | None = None,
        scale: Array | None = None,
    ) -> None:
        w_t = weight.T.astype(np.float64)  # (in, out); folded in float64, rounded once
        b = np.zeros(w_t.shape[1]) if bias is None else bias.astype(np.float64)
        if norm is not None:
            if norm.bias is not None:
                b = b + norm.bias.astype(np.float64) @ w_t
            w_t = norm.weight.astype(np.float64)[:, None] * w_t
        if scale is not None:
            w_t, b = w_t * scale, b * scale
        self.weight_t = np.ascontiguousarray(w_t, dtype=np.float32)
        has_bias = bias is not None or (norm is not None and norm.bias is not None)
        self.bias = b.astype(np.float32) if has_bias else None
        self.norm = norm
        if norm is not None:
            self.center, self.average = norm.center, norm.average

    def __call__(self, x: Array) -> Array:
        if self.norm is None:
            y = x @ self.weight_t
        else:
            if self.center:
                x = x - x @ self.average
            rms = np.sqrt((x * x) @ self.average + EPS)  # (N, 1)
            y = x @ self.weight_t
            y /= rms
        if self.bias is not None:
            y += self.bias
        return y


def _swap_halves(rows: Array, heads: int) -> Array:
    """Rows (heads * D, ...) of a projection or its bias with each head's two halves of D
    swapped: its output is rotate-half's (x2, x1), to which RoPE applies sin as x gets cos."""
    d = rows.shape[0] // heads
    return rows.reshape(heads, 2, d // 2, -1)[:, ::-1].reshape(rows.shape)


class _Block:
    """One block's weights, arranged for few numpy calls (see _NormLinear).

    With RoPE the qkv product has extra columns, the queries' and keys' rows with their halves
    swapped: a rotation is then q * cos + q_swapped * sin, three calls on queries and keys
    together. Queries are pre-scaled by 1/sqrt(D).
    """

    def __init__(self, cfg: ModelConfig, w: dict[str, Array], p: str) -> None:
        pre = cfg.norm_placement == "pre"
        norm1, norm2 = _Norm(cfg.norm, w, p + "norm1"), _Norm(cfg.norm, w, p + "norm2")
        head_dim = cfg.width // cfg.heads
        qk_rows = cfg.width + cfg.n_kv_heads * head_dim
        qkv_w, qkv_b = w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias")
        scale = np.ones(qkv_w.shape[0])
        scale[: cfg.width] = 1.0 / math.sqrt(head_dim)
        if cfg.pos == "rope":
            heads = cfg.heads + cfg.n_kv_heads
            qkv_w = np.concatenate((qkv_w, _swap_halves(qkv_w[:qk_rows], heads)))
            scale = np.concatenate((scale, scale[:qk_rows]))
            if qkv_b is not None:
                qkv_b = np.concatenate((qkv_b, _swap_halves(qkv_b[:qk_rows], heads)))
        self.qkv = _NormLinear(qkv_w, qkv_b, norm1 if pre else None, scale)
        self.proj = _NormLinear(w[p + "attn.proj.weight"], w.get(p + "attn.proj.bias"))
        fc_w, fc_b = w[p + "mlp.fc.weight"], w.get(p + "mlp.fc.bias")
        self.fc = _NormLinear(fc_w, fc_b, norm2 if pre else None)
        self.out = _NormLinear(w[p + "mlp.proj.weight"], w.get(p + "mlp.proj.bias"))
        # A post-norm block's norms act on the stream itself; a pre-norm block's are folded.
        self.norm1: _Norm | None = None if pre else norm1
        self.norm2: _Norm | None = None if pre else norm2


class NumpyKVCache:
    """As models.transformer.KVCache: keys and values of every position so far, per layer. Keys
    are stored transposed, (B, K, D, context), ready to multiply the queries."""

    def __init__(self, layers: int, batch: int, kv_heads: int, context: int, head_dim: int) -> None:
        self.k = [np.zeros((batch, kv_heads, head_dim, context), np.float32) for _ in range(layers)]
        self.v = [np.zeros((batch, kv_heads, context, head_dim), np.float32) for _ in range(layers)]
        self.pos = 0


class NumpyTransformer:
    def __init__(self, cfg: ModelConfig, w: dict[str, Array]) -> None:
        self.cfg = cfg
        self.heads, self.kv_heads = cfg.heads, cfg.n_kv_heads
        self.head_dim = D = cfg.width // cfg.heads
        self.windows = cfg.layer_windows()
        self.wte = w["wte.weight"]
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
        self.qk = cfg.width + self.kv_heads * D  # query and key columns of the qkv product
        self.rope: tuple[Array, Array] | None = None
        if cfg.pos == "rope":
            inv = ROPE_BASE ** (-np.arange(0, D, 2, dtype=np.float32) / D)
            angles = np.outer(np.arange(cfg.context, dtype=np.float32), inv.astype(np.float32))
            cos, sin = np.cos(angles), np.sin(angles)  # (context, D/2)
            heads = self.heads + self.kv_heads
            # (context, qk) per column of [q | k]: cos on both halves, -sin then sin (rotate-half)
            self.rope = (np.tile(np.concatenate((cos, cos), 1), heads),
                         np.tile(np.concatenate((-sin, sin), 1), heads))  # fmt: skip
        self.layers = [_Block(cfg, w, f"blocks.{i}.") for i in range(cfg.layers)]
        pre = cfg.norm_placement == "pre"
        final = _Norm(cfg.norm, w, "norm") if pre else None
        self.head = _NormLinear(w.get("head.weight", self.wte), None, final)

    @property
    def max_positions(self) -> int:
        return self.cfg.context

    def new_cache(self, batch: int) -> NumpyKVCache:
        cfg = self.cfg
        return NumpyKVCache(cfg.layers, batch, self.kv_heads, cfg.context, self.head_dim)

    def forward(self, idx: Array, cache: NumpyKVCache) -> Array:
        """Logits (B, V) of the last of the positions idx (B, T) adds to the cache."""
        B, T = idx.shape
        pos, end = cache.pos, cache.pos + T
        if end > self.cfg.context:
            raise ConfigError(f"{end} positions exceed --context {self.cfg.context}")
        x = self.wte[idx.reshape(-1)]  # (B*T, C): rows are (sample, position), 2-D throughout
        if self.positions is not None:
            x = (x.reshape(B, T, -1) + self.positions[pos:end]).reshape(B * T, -1)
        for i, (layer, window) in enumerate(zip(self.layers, self.windows, strict=True)):
            # Past the last layer's keys and values only the last position matters: its
            # attention, projection and MLP run on that one row per sample.
            last = T > 1 and i == len(self.layers) - 1
            h = self._attention(layer.qkv(x), i, window, B, T, pos, cache, last)  # (B*T or B, C)
            if last:
                x = x.reshape(B, T, -1)[:, -1]  # (B, C)
            if layer.norm1 is None:  # pre-norm
                x = x + h
                x += self._mlp(x, layer)
            else:
                x = layer.norm1(x + h)
                assert layer.norm2 is not None
                x = layer.norm2(x + self._mlp(x, layer))
        cache.pos = end
        return self.head(x)  # (B, V): the final norm is folded into the head

    def _attention(
        self,
        qkv: Array,
        index: int,
        window: int | None,
        B: int,
        T: int,
        pos: int,
        cache: NumpyKVCache,
        last_only: bool,
    ) -> Array:
        """Attention output (B*T, C), or (B, C) of the last positions if last_only (or T == 1),
        from qkv (B*T, columns); writes the new keys and values into the cache."""
        H, K, D = self.heads, self.kv_heads, self.head_dim
        G, end, qk = H // K, pos + T, self.qk
        if self.rope is not None:  # rotate queries and keys together (see _Block)
            cos, sin = self.rope[0][pos:end], self.rope[1][pos:end]  # (T, qk)
            qkv3 = qkv.reshape(B, T, -1)
            rotated = (qkv3[..., :qk] * cos + qkv3[..., -qk:] * sin).reshape(B * T, qk)
            q, k = rotated[:, : self.cfg.width], rotated[:, self.cfg.width :]
        else:
            q, k = qkv[:, : self.cfg.width], qkv[:, self.cfg.width : qk]
        v = qkv[:, qk : qk + K * D]  # (B*T, K*D)
        keys, values = cache.k[index], cache.v[index]  # (B, K, D, ctx), (B, K, ctx, D)
        if T == 1:
            keys[..., pos] = k.reshape(B, K, D)
            values[:, :, pos] = v.reshape(B, K, D)
        else:
            keys[..., pos:end] = k.reshape(B, T, K, D).transpose(0, 2, 3, 1)
            values[:, :, pos:end] = v.reshape(B, T, K, D).transpose(0, 2, 1, 3)
        if T == 1 or last_only:  # one query per sample: it sees every key, within its window
            first = 0 if window is None else max(0, end - window)
            q = q.reshape(B, T, H * D)[:, -1].reshape(B, K, G, D)  # query heads of a group
            scores = q @ keys[..., first:end]  # (B, K, G, S)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            y = scores @ values[:, :, first:end]  # (B, K, G, D)
            y /= scores.sum(axis=-1, keepdims=True)
            return self.layers[index].proj(y.reshape(B, H * D))  # (B, C)
        # A prompt or a refill: T queries from position pos, under the causal (window) mask.
        q = q.reshape(B, T, K, G, D).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, D)
        scores = q @ keys[..., :end]  # (B, K, G*T, S)
        qpos = np.tile(np.arange(pos, end), G)[:, None]  # (G*T, 1)
        kpos = np.arange(end)[None, :]  # (1, S)
        allowed = kpos <= qpos
        if window is not None:
            allowed &= kpos > qpos - window
        scores = np.where(allowed, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        y = scores @ values[:, :, :end]  # (B, K, G*T, D)
        y /= scores.sum(axis=-1, keepdims=True)
        y = y.reshape(B, K, G, T, D).transpose(0, 3, 1, 2, 4).reshape(B * T, H * D)
        return self.layers[index].proj(y)  # (B*T, C)

    @cached_property
    def gelu(self) -> _Gelu:
        """Built on first use (~9 ms): when decode.c runs the network, numpy never needs it."""
        return _Gelu()

    def _mlp(self, x: Array, layer: _Block) -> Array:
        h = layer.fc(x)  # the pre-norm is folded in
        if self.cfg.mlp == "gelu":
            h = self.gelu(h)
        elif self.cfg.mlp == "relu2":
            h = np.square(np.maximum(h, 0.0))
        else:
            gate, up = np.split(h, 2, axis=-1)
            h = gate * _sigmoid(gate) * up  # silu(gate) * up
        return layer.out(h)


class NumpyState:
    """As models.recurrent.RecurrentState: h (and an LSTM's c), (L, B, C) each."""

    def __init__(self, h: Array, c: Array | None) -> None:
        self.h, self.c = h, c
        self.pos = 0


class NumpyRecurrent:
    """torch.nn.LSTM / GRU one token at a time, arranged for few numpy calls per step.

    The sigmoid gates' rows are pre-scaled by 1/2 (exactly, a power of two): one tanh over all
    gates then gives tanh itself where a tanh is wanted and sigmoid(z) = (1 + tanh(z/2)) / 2
    elsewhere.
    """

    def __init__(self, cfg: ModelConfig, w: dict[str, Array]) -> None:
        self.cfg = cfg
        self.lstm = cfg.model == "lstm"
        embed = w["embed.weight"]
        self.head = _NormLinear(w.get("head.weight", embed), None)
        C = cfg.width
        # Sigmoid gates' rows: LSTM (i, f, g, o) all but g; GRU (r, z, n) the first two.
        halve = np.full(4 * C if self.lstm else 3 * C, 0.5, np.float32)
        halve[2 * C : 3 * C] = 1.0
        self.embed = embed
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

    @property
    def max_positions(self) -> None:
        return None

    def new_cache(self, batch: int) -> NumpyState:
        h = np.zeros((self.cfg.layers, batch, self.cfg.width), np.float32)
        return NumpyState(h, np.zeros_like(h) if self.lstm else None)

    def forward(self, idx: Array, state: NumpyState) -> Array:
        """Logits (B, V) after feeding idx (B, T) to the state, which it advances."""
        C = self.cfg.width
        w_ih, b_ih = self.layers[0][:2]
        first = self.embed[idx] @ w_ih + b_ih  # (B, T, gates): layer 0's input, every token
        for t in range(idx.shape[1]):
            x_gates = first[:, t]  # (B, gates)
            for i, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.layers):
                if i > 0:
                    x_gates = state.h[i - 1] @ w_ih
                    x_gates += b_ih
                h_gates = state.h[i] @ w_hh
                h_gates += b_hh
                if self.lstm:
                    assert state.c is not None
                    t_all = np.tanh(x_gates + h_gates)  # (B, 4C): i, f, o halved; g not
                    s = 0.5 * t_all + 0.5  # sigmoid of i, f, o (g's columns unused)
                    c = s[:, C : 2 * C] * state.c[i] + s[:, :C] * t_all[:, 2 * C : 3 * C]
                    state.c[i] = c
                    state.h[i] = s[:, 3 * C :] * np.tanh(c)
                else:
                    t_rz = np.tanh(x_gates[:, : 2 * C] + h_gates[:, : 2 * C])  # halved r, z
                    rz = 0.5 * t_rz + 0.5  # (B, 2C)
                    n = np.tanh(x_gates[:, 2 * C :] + rz[:, :C] * h_gates[:, 2 * C :])
                    state.h[i] = n + rz[:, C:] * (state.h[i] - n)  # (1 - z) n + z h
        state.pos += idx.shape[1]
        return self.head(state.h[-1])  # (B, V): the top layer's output after the last token


class NumpyEngine:
    """Generation's Engine (sampling/generate.py) over a numpy network. Given the compiled
    decode.c (sampling/kernel.py), a transformer's forwards run there instead."""

    def __init__(self, net: NumpyTransformer | NumpyRecurrent, library: Any = None) -> None:
        self.net = net
        self.cache: NumpyKVCache | NumpyState | None = None
        self.forward: Callable[[Array, Any], Array] = net.forward
        if library is not None and isinstance(net, NumpyTransformer):
            self.forward = KernelForward(library, net)

    @property
    def max_positions(self) -> int | None:
        return self.net.max_positions

    @property
    def config(self) -> ModelConfig:
        return self.net.cfg

    @property
    def vocab_size(self) -> int:
        return self.net.cfg.vocab_size

    @property
    def in_c(self) -> bool:
        return isinstance(self.forward, KernelForward)

    def start(self, tokens: Array) -> Array:
        cache = self.cache
        if isinstance(cache, NumpyKVCache) and cache.k[0].shape[0] == tokens.shape[0]:
            cache.pos = 0  # a refill: positions from 0 on are written before they are read
        else:
            self.cache = cache = self.net.new_cache(tokens.shape[0])
        return self.forward(tokens, cache)

    def step(self, tokens: Array) -> Array:
        return self.forward(tokens[:, None], self.cache)

    def recompute(self, tokens: Array) -> Array:
        return self.forward(tokens, self.net.new_cache(tokens.shape[0]))
