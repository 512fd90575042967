"""Data parallelism with torch's own engine: `torchrun --nproc_per_node=N lmcli train …`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each process trains a replica on its own batches
and DistributedDataParallel averages the gradients. Each process runs grad_accum / N micro-steps,
so the global batch equals one process's with --grad-accum. Only rank 0 writes and prints.
Without torchrun every method here is a no-op.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        if device.type == "cuda" and self.active:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.local_rank] if on_cuda else None)

    def no_sync(self, model: nn.Module, sync: bool) -> AbstractContextManager[object]:
        """Skip the gradient all-reduce on all but the last micro-step of an accumulation."""
        if self.active and not sync and isinstance(model, DistributedDataParallel):
            return model.no_sync()
        return nullcontext()

    def agree(self, stop: bool, seconds: float) -> tuple[bool, float]:
        """One all-reduce per step for what the ranks must agree on: stop if any rank was asked
        to (a Ctrl-C may reach one), and the slowest rank's clock. With each rank's own clock,
        one rank stopped at its time budget a step before another (their collectives then
        mismatched and gloo aborted), and a time-driven schedule gave each replica its own
        learning rate. One collective carries both (the stop flag already needed one)."""
        if not self.active:
            return stop, seconds
        t = torch.tensor([float(stop), seconds], dtype=torch.float64)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t[0].item()), float(t[1].item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        out = value.detach().clone()
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
        return out / self.world_size

    def share(self, value: object) -> object:
        """Rank 0's `value`, on every rank (e.g. the run directory rank 0 created)."""
        if not self.active:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def teardown(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup(device: torch.device) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return Distributed(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=world_size,
    )
