"""A decoder-only transformer language model, meant to be read top to bottom.

Shapes (a line that changes one ends with a comment giving the new shape):
    B  batch size
    T  time: the positions fed in this call (the context length, in training)
    S  key positions attended over: T, or cache.pos + T when generating with a KVCache
    C  width of the residual stream (--width)
    H  query heads (--heads)
    K  key/value heads (--kv-heads): K = H is multi-head, K = 1 multi-query, between grouped-query
    D  head size, C // H
    V  vocabulary size
    W  sliding-window width of a local layer (--window)

The hyperparameters come from lmcli.config.ModelConfig, whose validate() has already refused
inconsistent values; the modules below only check what depends on their input (its length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcli.config import ModelConfig, NormKind
from lmcli.errors import ConfigError
from lmcli.weights import mlp_hidden

# "sdpa" runs torch's fused scaled_dot_product_attention; "naive" spells the same computation out
# (q @ k^T, mask, softmax, @ v) so that tests can check one against the other.
AttentionImpl = Literal["sdpa", "naive"]

INIT_STD = 0.02
ROPE_BASE = 10000.0


def make_norm(kind: NormKind, width: int, bias: bool) -> nn.Module:
    """LayerNorm (centre and scale, optional bias) or RMSNorm (scale only, a little cheaper)."""
    if kind == "layernorm":
        return nn.LayerNorm(width, bias=bias)
    # RMSNorm never re-centres, so it has no bias whatever --bias says.
    return nn.RMSNorm(width, eps=1e-5)


def rotary_tables(context: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """cos and sin of the angle by which each position turns each pair of channels (RoPE)."""
    # Pair i turns at frequency base^(-2i/D): fast pairs see word order, slow pairs distance.
    # Written 1 / base^(2i/D), as Hugging Face's Llama computes it: the float32 tables are then
    # bit for bit the same, and so is an exported model's output (base^(-2i/D) differs by 4e-6).
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (context, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Turn channel pairs (i, i + D/2) of x by their position's angle; cos and sin are (T, D/2).

    q·k then depends on the two positions only through their difference: relative positions.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D)


def sinusoidal_table(context: int, width: int) -> Tensor:
    """Fixed absolute positions (Vaswani et al. 2017): sin on even channels, cos on odd ones."""
    inv_freq = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float32) / width)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (context, C/2)
    table = torch.zeros(context, width)  # (context, C)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()[:, : width // 2]  # an odd C has one sin channel more
    return table


def attention_mask(
    pos: int, T: int, window: int | None, device: torch.device
) -> tuple[Tensor | None, bool]:
    """(mask, is_causal) for queries at positions pos .. pos+T-1 over keys 0 .. pos+T-1.

    mask (T, S) is True where query i may see key j: j <= i, and i - j < W in a local layer.
    is_causal says the mask is the plain causal square (from position 0, no window), which
    SDPA builds itself; mask None means every key is visible (one query after a prefix).
    """
    end = pos + T
    if window is None and pos == 0:
        return None, True
    if window is None and T == 1:
        return None, False
    q = torch.arange(pos, end, device=device)[:, None]  # (T, 1)
    k = torch.arange(end, device=device)[None, :]  # (1, S)
    mask = k <= q  # (T, S)
    if window is not None:
        mask &= q - k < window
    return mask, False


class KVCache:
    """Keys and values of every position seen so far, per layer, for incremental generation.

    Allocated for the model's whole context up front, so that a step writes its keys in place
    instead of concatenating. Meant for inference (torch.no_grad or torch.inference_mode). `pos`
    counts the positions written so far; the model advances it at the end of each forward.
    """

    def __init__(
        self,
        layers: int,
        batch_size: int,
        kv_heads: int,
        context: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, kv_heads, context, head_dim)  # (B, K, context, D)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.pos = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store one layer's new k, v (B, K, T, D); return the keys and values of all S so far."""
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, K, S, D) each


class CausalSelfAttention(nn.Module):
    """H query heads share K key/value heads: each group of H / K query heads reads one k, v."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer  # where this layer's keys live in a KVCache
        self.heads, self.kv_heads = cfg.heads, cfg.n_kv_heads
        self.head_dim = cfg.width // cfg.heads
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.split = [q_size, kv_size, kv_size]
        # One matmul makes q, k and v: fewer, larger kernels than three projections.
        self.qkv = nn.Linear(cfg.width, q_size + 2 * kv_size, bias=cfg.bias)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.impl: AttentionImpl = "sdpa"
        # `lmcli inspect` reads the attention here: the naive path hands it the raw scores
        # (B, H, T, S) and the weights after mask and softmax. SDPA never forms the weights.
        self.record: Callable[[str, Tensor], None] | None = None

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
    ) -> Tensor:
        """`mask` (T, S) is True where a query may see a key, None when it sees all of them or
        when `is_causal` says it is the plain causal square, which SDPA builds itself."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)  # (B, T, H*D), (B, T, K*D), (B, T, K*D)
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            # The cache keeps rotated keys: a key's position never changes once written.
            k, v = cache.update(self.layer, k, v)  # (B, K, S, D) each
        dropout = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=is_causal,
                enable_gqa=self.kv_heads != self.heads,
            )  # (B, H, T, D)
        else:
            if is_causal:  # the square SDPA would have built
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
            y = self._naive(q, k, v, mask, dropout)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_drop(self.proj(y))  # (B, T, C)

    def _naive(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float
    ) -> Tensor:
        """Attention spelled out; what scaled_dot_product_attention computes, more slowly."""
        group = self.heads // self.kv_heads
        if group > 1:
            # Query head h reads kv head h // group, as SDPA's enable_gqa does.
            k = k.repeat_interleave(group, dim=1)  # (B, H, S, D)
            v = v.repeat_interleave(group, dim=1)  # (B, H, S, D)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if self.record is not None:
            self.record("scores", scores)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = F.dropout(F.softmax(scores, dim=-1), p=dropout)  # (B, H, T, S)
        if self.record is not None:
            self.record("weights", weights)
        return weights @ v  # (B, H, T, D)


class MLP(nn.Module):
    """Per-position feed-forward: widen, a nonlinearity, project back to C.

    gelu and relu2 (squared ReLU, Primer) widen to 4C. swiglu gates one half of its hidden layer
    with the other and so has three C x hidden matrices instead of two; a hidden size of 8C/3
    (rounded up to a multiple of 8, as LLaMA does) keeps its parameters near gelu's 8C^2.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        hidden = mlp_hidden(cfg)
        fc_out = 2 * hidden if cfg.mlp == "swiglu" else hidden
        self.fc = nn.Linear(cfg.width, fc_out, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.width, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)  # (B, T, 4C); swiglu (B, T, 2 * hidden)
        if self.kind == "gelu":
            h = F.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, up = h.chunk(2, dim=-1)  # (B, T, hidden) each
            h = F.silu(gate) * up  # (B, T, hidden)
        return self.drop(self.proj(h))  # (B, T, C)


class Block(nn.Module):
    """Attention (positions talk to each other), then the MLP (each position thinks alone)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_placement == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.width, cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.norm2 = make_norm(cfg.norm, cfg.width, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
    ) -> Tensor:
        if self.pre_norm:
            # The residual stream itself is never normalised: gradients reach early layers intact.
            x = x + self.attn(self.norm1(x), rope, mask, is_causal, cache)
            return x + self.mlp(self.norm2(x))  # (B, T, C)
        # Post-norm, as in the original transformer: normalise after each residual addition.
        x = self.norm1(x + self.attn(x, rope, mask, is_causal, cache))
        return self.norm2(x + self.mlp(x))  # (B, T, C)


class Transformer(nn.Module):
    """Token ids in, next-token logits out: embeddings, L blocks, a final norm, the LM head."""

    # Non-persistent buffers (not in the state dict: they are rebuilt from the config).
    sinusoid: Tensor  # (context, C)
    rope_cos: Tensor  # (context, D/2)
    rope_sin: Tensor  # (context, D/2)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.windows = cfg.layer_windows()  # per layer: W, or None for a global layer
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.context, cfg.width) if cfg.pos == "learned" else None
        if cfg.pos == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(cfg.context, cfg.width), False)
        if cfg.pos == "rope":
            cos, sin = rotary_tables(cfg.context, cfg.width // cfg.heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.layers))
        # Post-norm blocks already end in a norm; pre-norm leaves the stream unnormalised.
        pre_norm = cfg.norm_placement == "pre"
        self.norm = make_norm(cfg.norm, cfg.width, cfg.bias) if pre_norm else None
        # No bias: with a tied head it would be the only untied part, and it buys little.
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        if cfg.tie:
            self.head.weight = self.wte.weight
        init_weights(self)

    @property
    def max_positions(self) -> int | None:
        """Positions a sequence (or a generation with a KVCache) may span: the context length."""
        return self.cfg.context

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        """Use the fused SDPA kernels ("sdpa", the default) or the spelled-out path ("naive")."""
        if impl not in ("sdpa", "naive"):
            raise ValueError(f"unknown attention implementation {impl!r}")
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.impl = impl

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty KVCache for generating `batch_size` sequences with this model."""
        weight = self.wte.weight
        head_dim = self.cfg.width // self.cfg.heads
        return KVCache(
            self.cfg.layers,
            batch_size,
            self.cfg.n_kv_heads,
            self.cfg.context,
            head_dim,
            weight.device,
            weight.dtype,
        )

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) for token ids idx (B, T), and the mean cross-entropy against targets
        (B, T) when given. With a cache, idx continues the sequence the cache holds."""
        B, T = idx.shape
        pos = 0 if cache is None else cache.pos
        end = pos + T  # S: the positions attended over, cached ones included
        if end > self.cfg.context:
            raise ConfigError(
                f"{end} positions exceed --context {self.cfg.context}",
                hint="the position tables and masks end at the context length",
            )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[pos:end]  # (B, T, C): the (T, C) table broadcasts over B
        elif self.cfg.pos == "sinusoidal":
            x = x + self.sinusoid[pos:end]  # (B, T, C)
        x = self.drop(x)
        rope = (self.rope_cos[pos:end], self.rope_sin[pos:end]) if self.cfg.pos == "rope" else None
        # Masks are made for the T x S positions at hand, never for the whole context (a
        # context of 100,000 would need a 10 GB square). From position 0 a global layer's mask
        # is the causal square, which SDPA's fused kernels build themselves (is_causal); one new
        # token after a prefix sees every key and needs none.
        masks: dict[int | None, tuple[Tensor | None, bool]] = {}
        for block, window in zip(self.blocks, self.windows, strict=True):
            # A window covering all S keys is no restriction: take the faster global path.
            key = None if window is None or window >= end else window
            if key not in masks:
                masks[key] = attention_mask(pos, T, key, idx.device)
            x = block(x, rope, *masks[key], cache)  # (B, T, C)
        if cache is not None:
            cache.pos = end
        if self.norm is not None:
            x = self.norm(x)
        logits = self.head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    def num_params(self) -> int:
        """Every parameter once (a tied head shares the embedding's matrix)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, forward and backward, as nanoGPT's estimate_mfu counts them
        (PaLM, appendix B): 6 per weight that multiplies an activation (2 forward, 4 backward),
        which is every parameter but the lookup tables (learned positions; the token embedding
        when the head is untied), plus 12 * C * span per layer for the scores and the mixing,
        where span is the sequence length, or at most W on a local layer."""
        T = self.cfg.context if seq_len is None else seq_len
        lookups = 0 if self.wpe is None else self.wpe.weight.numel()
        if not self.cfg.tie:
            lookups += self.wte.weight.numel()
        attention = sum(12 * self.cfg.width * (T if w is None else min(w, T)) for w in self.windows)
        return 6 * (self.num_params() - lookups) + attention


def init_weights(model: Transformer) -> None:
    """nanoGPT's (GPT-2's) initialisation, applied once by the constructor.

    - Every Linear and Embedding weight ~ N(0, 0.02): small, so the first logits are nearly
      uniform and the loss starts near ln V.
    - The two projections that write into the residual stream (attention and MLP outputs) get
      std 0.02 / sqrt(2L): the stream sums 2L of them, so its variance does not grow with depth.
    - Biases zero; norm gains one (PyTorch's default).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    residual_std = INIT_STD / math.sqrt(2 * model.cfg.layers)
    for module in model.modules():
        if isinstance(module, CausalSelfAttention | MLP):
            nn.init.normal_(module.proj.weight, mean=0.0, std=residual_std)
