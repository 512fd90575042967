"""Looking inside the torch model while it runs: attention weights and the residual stream.

PyTorch's fused attention (SDPA) never forms the attention weights, so a capture switches every
layer to the model's own spelled-out path (q @ k^T, mask, softmax), which computes the same
logits (tests/inspect check it), and reads the weights where that path hands them over
(CausalSelfAttention.record). The residual stream after each block comes from forward hooks.
Both restore the model as they found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lmcli.errors import InputError
from lmcli.models.transformer import CausalSelfAttention, Transformer

# Attention weights kept at once, in floats (4 bytes each): 64M floats is 256 MB. Every head of
# GPT-2 small at full context (12 layers x 12 heads x 1024 x 1024) would be 151M.
MAX_CAPTURE_FLOATS = 64 * 2**20


@dataclass
class Captured:
    """What one forward left: per layer, the scores before the mask and the weights after the
    softmax, each (B, H, T, S); and the residual stream entering the blocks and after each one,
    (B, T, C) each (L + 1 of them)."""

    scores: dict[int, Tensor] = field(default_factory=dict)
    weights: dict[int, Tensor] = field(default_factory=dict)
    stream: list[Tensor] = field(default_factory=list)


def check_capture_size(model: Transformer, batch: int, T: int, layers: int, heads: int) -> None:
    """Refuse a capture that would not fit, saying how to narrow it."""
    floats = 2 * batch * layers * heads * T * T  # scores and weights
    if floats > MAX_CAPTURE_FLOATS:
        raise InputError(
            f"capturing {layers} layers x {heads} heads over {T} positions needs "
            f"{floats * 4 / 2**20:,.0f} MB of attention weights (at most "
            f"{MAX_CAPTURE_FLOATS * 4 / 2**20:,.0f} MB)",
            hint="narrow it with --layer and --head, or give a shorter text",
        )


@contextmanager
def capturing(model: Transformer, layers: set[int] | None = None) -> Iterator[Captured]:
    """Run forwards inside this block to capture attention (of `layers`, default all) and the
    residual stream; the model is back on its fused path afterwards."""
    captured = Captured()
    attentions = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    impls = [m.impl for m in attentions]

    def recorder(layer: int) -> Callable[[str, Tensor], None]:
        def record(stage: str, value: Tensor) -> None:
            store = captured.scores if stage == "scores" else captured.weights
            store[layer] = value.detach().float().cpu()

        return record

    def stream_in(module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        captured.stream.append(args[0].detach().float().cpu())  # (B, T, C): the embeddings

    def stream_out(module: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        captured.stream.append(out.detach().float().cpu())  # (B, T, C)

    hooks = [model.blocks[0].register_forward_pre_hook(stream_in)]
    hooks += [block.register_forward_hook(stream_out) for block in model.blocks]
    for module in attentions:
        if layers is None or module.layer in layers:
            module.impl = "naive"
            module.record = recorder(module.layer)
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()
        for module, impl in zip(attentions, impls, strict=True):
            module.impl, module.record = impl, None


def final_logits(model: Transformer, stream: Tensor) -> Tensor:
    """The logits the model would give if `stream` (B, T, C) were its last block's output: the
    final norm (pre-norm models) and the head. On the last block's output it *is* the model's
    output; on an earlier one it is the logit lens."""
    x = stream if model.norm is None else model.norm(stream)
    return model.head(x)  # (B, T, V)
