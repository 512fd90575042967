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

from lmcli.config import TrainConfig
from lmcli.corpus.tokenfiles import open_tokens
from lmcli.training.data import TrainBatches
from lmcli.training.optim import build_optimizer


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
