"""Device, precision and thread choices, each with the reason it was made.

- device "auto": CUDA if present, else Apple's MPS, else the CPU.
- dtype "auto": bfloat16 autocast on a CUDA GPU that supports it; float16 autocast with loss
  scaling on one that does not; float32 elsewhere (CPUs without bf16 units run bf16 slower).
- threads: see `configure_threads`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from lmcli.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # the autocast dtype; float32 means no autocast
    notes: tuple[str, ...] = field(default=())

    @property
    def autocast(self) -> bool:
        return self.dtype != torch.float32

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: CUDA is not available on this machine",
            hint="use --device cpu (or --device auto)",
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available", hint="use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None


def resolve_placement(device_name: str, dtype_name: str) -> Placement:
    device = resolve_device(device_name)
    notes: list[str] = []
    if dtype_name not in ("auto", *DTYPES):
        raise ConfigError(f"unknown --dtype {dtype_name!r} (auto, float32, bfloat16, float16)")
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if dtype_name == "auto":
            dtype = torch.bfloat16 if bf16 else torch.float16
            if not bf16:
                notes.append("this GPU lacks bfloat16: training in float16 with loss scaling")
        elif dtype_name == "bfloat16" and not bf16:
            dtype = torch.float16
            notes.append("--dtype bfloat16 asked, but this GPU lacks it: using float16 + scaling")
        else:
            dtype = DTYPES[dtype_name]
    else:
        dtype = torch.float32 if dtype_name == "auto" else DTYPES[dtype_name]
        if dtype == torch.float16 and device.type == "cpu":
            raise ConfigError("--dtype float16 is not supported on the CPU", hint="use float32")
    return Placement(device=device, dtype=dtype, notes=tuple(notes))


def default_threads() -> int:
    """One OpenMP thread per two cores, at least one.

    On a 2-core machine with anything else running, torch's default (one spinning thread per
    core) made each training step ~30x slower; one thread is never that bad, and passive
    waiting (OMP_WAIT_POLICY=PASSIVE, set by the CLI) keeps extra threads from spinning.
    """
    return max(1, (os.cpu_count() or 1) // 2)


def configure_threads(threads: int | None) -> int:
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ConfigError(f"--threads must be at least 1 (got {n})")
    torch.set_num_threads(n)
    return n
