"""What one training step holds in memory, counted tensor by tensor.

A process's resident size says little about a model: torch's libraries and the allocator's
cached blocks dominate it, and freed memory is reused without showing. This counts what the
step itself needs: parameters, their gradients, the optimiser's state, and the activations
autograd saves for the backward pass (each storage once, however many operations save it;
weights and buffers that autograd saves are not activations), under the run's autocast. On
CUDA the allocator's peak is also available (devices.PeakMemory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmcli.config import ModelConfig, TrainConfig
from lmcli.corpus.tokenfiles import open_tokens
from lmcli.training.data import TrainBatches
from lmcli.training.optim import build_optimizer
from lmcli.weights import mlp_hidden


@dataclass(frozen=True)
class StepMemory:
    parameters: int  # bytes
    gradients: int
    optimizer: int
    activations: int  # saved for backward by one forward of the batch

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations


def _storages(tensors: Sequence[torch.Tensor]) -> dict[int, int]:
    """Bytes per distinct storage (views and repeated saves share one)."""
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(_storages(tensors).values())


def step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    autocast_dtype: torch.dtype = torch.float32,
) -> StepMemory:
    """Take one optimiser step on (x, y) and count what it held. Changes the model's weights:
    call it on a copy, or on a model whose training is over."""
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    model.train()
    device = x.device
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32),
    ):
        _, loss = model(x, y)
    params = list(model.parameters())
    fixed = _storages([*params, *model.buffers()])  # weights and tables are saved too
    activations = sum(n for ptr, n in _storages(saved).items() if ptr not in fixed)
    loss.backward()
    optimizer.step()  # creates the state (moments, momenta) on its first step
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    grads = [p.grad for p in params if p.grad is not None]
    optimizer.zero_grad(set_to_none=True)
    return StepMemory(_nbytes(params), _nbytes(grads), _nbytes(state), activations)


def first_batch_memory(
    model: nn.Module,
    train_cfg: TrainConfig,
    context: int,
    token_dir: Path,
    device: torch.device,
    autocast_dtype: torch.dtype = torch.float32,
) -> StepMemory:
    """step_memory on the run's own first training batch, with a fresh optimiser of its kind."""
    batches = TrainBatches(open_tokens(token_dir, "train"), train_cfg.batch_size, context,
                           train_cfg.seed)  # fmt: skip
    x, y = (t.to(device) for t in batches.get(0))
    optimizer = build_optimizer(model, train_cfg, device)
    return step_memory(model, optimizer, x, y, autocast_dtype)


def estimate_step_memory(cfg: ModelConfig, train: TrainConfig, params: int,
                         autocast: bool = False) -> StepMemory:  # fmt: skip
    """What `step_memory` would count for a step of this model, from the configs alone, so that
    a run too large for the machine is refused before anything is allocated.

    Activations per token and layer, measured with step_memory (float32 values): a transformer
    block saves ~16 of width C (norms, q/k/v and their rotations, attention output, residuals)
    plus 2 of the MLP's hidden width (4 with SwiGLU: gate, up, their product); dropout masks
    double that. The logits and their log-softmax add 2 V per token; a local layer's (T, T) mask
    one byte per pair. torch's LSTM keeps ~17 C per token and layer (its gates and cell
    states), its GRU ~8 C.
    """
    tokens = train.batch_size * cfg.context
    value = 2 if autocast else 4
    if cfg.model == "transformer":
        hidden = mlp_hidden(cfg)
        per_layer = 16 * cfg.width + (4 if cfg.mlp == "swiglu" else 2) * hidden
        masks = sum(cfg.context * cfg.context for w in cfg.layer_windows() if w is not None)
    else:
        per_layer = (17 if cfg.model == "lstm" else 8) * cfg.width
        masks = 0
    if cfg.dropout > 0:
        per_layer *= 2
    activations = value * tokens * (per_layer * cfg.layers + 2 * cfg.vocab_size) + masks
    weights = 4 * params  # float32 master weights, whatever the autocast
    # AdamW keeps two moments per weight; Muon one momentum per hidden matrix (counted as two
    # here too: the embeddings, head and vectors keep AdamW's, and the bound stays safe).
    return StepMemory(parameters=weights, gradients=weights, optimizer=2 * weights,
                      activations=activations)  # fmt: skip
