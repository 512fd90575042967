"""One decoding step of a Transformer as plain function calls, for speed.

A token of a small model on the CPU runs ~50 nn.Modules, and each call's Python dispatch (hook
checks, attribute lookups through Module.__getattr__) costs about as much as its arithmetic.
TransformerStep reads the model's parameters once and computes exactly what
`model(ids.view(B, 1), cache=cache)` computes for one new position, without the modules: the
same functions on the same tensors, writing the same KVCache. tests/sampling/test_step.py checks
it against the model for every variant of ModelConfig.

Shapes as in models/transformer.py: B batch, C width, H query heads, K kv heads, D head size,
S positions in the cache after this step, V vocabulary, W a local layer's window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lmcli.errors import ConfigError
from lmcli.models.transformer import Block, KVCache, Transformer, apply_rotary

Norm = Callable[[Tensor], Tensor]


def functional_norm(module: nn.Module) -> Norm:
    """The norm module as a function of x: LayerNorm (optional bias) or RMSNorm."""
    # The tensors are read once: a module's attributes go through the slow Module.__getattr__.
    if isinstance(module, nn.LayerNorm):
        ln_shape, ln_weight, ln_bias = module.normalized_shape, module.weight, module.bias
        ln_eps = module.eps
        return lambda x: F.layer_norm(x, ln_shape, ln_weight, ln_bias, ln_eps)
    if isinstance(module, nn.RMSNorm):
        rms_shape, rms_weight, rms_eps = module.normalized_shape, module.weight, module.eps
        return lambda x: F.rms_norm(x, rms_shape, rms_weight, rms_eps)
    raise TypeError(f"no functional form for {type(module).__name__}")


class _Layer:
    """One block's parameters and its computation for one position."""

    def __init__(self, model: Transformer, index: int) -> None:
        block = model.blocks[index]
        assert isinstance(block, Block)  # for the type checker: a ModuleList yields Modules
        cfg = model.cfg
        self.index, self.window = index, model.windows[index]
        self.pre_norm = cfg.norm_placement == "pre"
        self.norm1, self.norm2 = functional_norm(block.norm1), functional_norm(block.norm2)
        attn, mlp = block.attn, block.mlp
        self.heads, self.kv_heads, self.head_dim = attn.heads, attn.kv_heads, attn.head_dim
        self.split = attn.split
        self.qkv_w, self.qkv_b = attn.qkv.weight, attn.qkv.bias
        self.attn_w, self.attn_b = attn.proj.weight, attn.proj.bias
        self.mlp_kind = mlp.kind
        self.fc_w, self.fc_b = mlp.fc.weight, mlp.fc.bias
        self.mlp_w, self.mlp_b = mlp.proj.weight, mlp.proj.bias

    def __call__(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: KVCache) -> Tensor:
        if self.pre_norm:
            x = x + self.attention(self.norm1(x), rope, cache)
            return x + self.mlp(self.norm2(x))  # (B, C)
        x = self.norm1(x + self.attention(x, rope, cache))
        return self.norm2(x + self.mlp(x))  # (B, C)

    def attention(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: KVCache) -> Tensor:
        B = x.size(0)
        q, k, v = F.linear(x, self.qkv_w, self.qkv_b).split(self.split, dim=-1)  # (B, H*D), ...
        # One position: (B, 1, H, D) and (B, H, 1, D) have the same memory layout.
        q = q.view(B, self.heads, 1, self.head_dim)  # (B, H, 1, D)
        k = k.view(B, self.kv_heads, 1, self.head_dim)  # (B, K, 1, D)
        v = v.view(B, self.kv_heads, 1, self.head_dim)  # (B, K, 1, D)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        k, v = cache.update(self.index, k, v)  # (B, K, S, D) each
        S = k.size(2)
        if self.window is not None and self.window < S:
            # A local layer sees keys (pos - W, pos]: the last W, so no mask is needed.
            k, v = k[:, :, S - self.window :], v[:, :, S - self.window :]  # (B, K, W, D)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv_heads != self.heads)
        return F.linear(y.view(B, -1), self.attn_w, self.attn_b)  # (B, C)

    def mlp(self, x: Tensor) -> Tensor:
        h = F.linear(x, self.fc_w, self.fc_b)  # (B, 4C); swiglu (B, 2 * hidden)
        if self.mlp_kind == "gelu":
            h = F.gelu(h)
        elif self.mlp_kind == "relu2":
            h = F.relu(h).square()
        else:
            gate, up = h.chunk(2, dim=-1)  # (B, hidden) each
            h = F.silu(gate) * up  # (B, hidden)
        return F.linear(h, self.mlp_w, self.mlp_b)  # (B, C)


class TransformerStep:
    """`step(ids, cache)`: the logits (B, V) after ids (B,), the same as
    `model(ids.view(-1, 1), cache=cache)[0][:, -1]`, for a model in eval mode."""

    def __init__(self, model: Transformer) -> None:
        if model.training:
            raise ValueError("TransformerStep computes eval mode only (no dropout)")
        cfg = model.cfg
        self.context = cfg.context
        self.wte, self.head = model.wte.weight, model.head.weight
        self.positions: Tensor | None = None  # (context, C) added to the embedding
        if model.wpe is not None:
            self.positions = model.wpe.weight
        elif cfg.pos == "sinusoidal":
            self.positions = model.sinusoid
        self.rope = (model.rope_cos, model.rope_sin) if cfg.pos == "rope" else None
        self.layers = [_Layer(model, i) for i in range(cfg.layers)]
        self.norm = None if model.norm is None else functional_norm(model.norm)

    def __call__(self, ids: Tensor, cache: KVCache) -> Tensor:
        pos = cache.pos
        if pos >= self.context:
            raise ConfigError(
                f"{pos + 1} positions exceed --context {self.context}",
                hint="the position tables and masks end at the context length",
            )
        x = F.embedding(ids, self.wte)  # (B, C)
        if self.positions is not None:
            x = x + self.positions[pos]  # (B, C)
        rope = None
        if self.rope is not None:
            rope = (self.rope[0][pos : pos + 1], self.rope[1][pos : pos + 1])  # (1, D/2) each
        for layer in self.layers:
            x = layer(x, rope, cache)  # (B, C)
        cache.pos = pos + 1
        if self.norm is not None:
            x = self.norm(x)
        return F.linear(x, self.head)  # (B, V)
