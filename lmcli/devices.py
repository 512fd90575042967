"""Device, precision and thread choices, each with the reason it was made.

- device "auto": CUDA if present, else Apple's MPS, else the CPU.
- dtype "auto": bfloat16 autocast on a CUDA GPU that supports it; float16 autocast with loss
  scaling on one that does not; float32 elsewhere (CPUs without bf16 units run bf16 slower).
- threads: on the CPU, measured (see `fastest_threads`) unless --threads says.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmcli.config import DTYPE_NAMES, check_device_name
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
    """The torch device for a --device name lmcli supports and this machine has."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available on this machine",
                hint="use --device cpu (or --device auto)",
            )
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA device{'s' * (count != 1)}",
                hint=f"use cuda:0 … cuda:{count - 1}",
            )
        return device
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available", hint="use --device cpu")
    return torch.device(name)


def resolve_placement(device_name: str, dtype_name: str) -> Placement:
    device = resolve_device(device_name)
    notes: list[str] = []
    if dtype_name not in DTYPE_NAMES:
        raise ConfigError(f"unknown --dtype {dtype_name!r} ({', '.join(DTYPE_NAMES)})")
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


def thread_candidates() -> list[int]:
    """CPU thread counts worth trying: one, and one per core (at most 16)."""
    cores = min(os.cpu_count() or 1, 16)
    return sorted({1, cores})


def capped_threads(threads: int) -> tuple[int, str | None]:
    """At most one thread per core: more only make OpenMP threads wait on each other (20 steps
    took 24 s with --threads 999 on 2 cores, 0.2 s with one). The count, and a note if capped."""
    cores = os.cpu_count() or 1
    if threads <= cores:
        return threads, None
    return cores, f"--threads {threads} is more than the {cores} cores here: using {cores}"


def configure_threads(threads: int | None) -> int | None:
    """Set an explicit thread count (capped at the cores); None leaves the choice to
    `fastest_threads`."""
    if threads is None:
        return None
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})")
    threads, _ = capped_threads(threads)
    torch.set_num_threads(threads)
    return threads


def fastest_threads(time_step: Callable[[], float]) -> tuple[int, dict[int, float]]:
    """Time a step with each candidate thread count and keep the fastest.

    Measured on a 2-core machine (README): when it is otherwise idle, two OpenMP threads run a
    small model's step ~1.9x faster than one; when another process keeps a core busy, two
    spin-waiting threads run it ~2.3x *slower* than one (and ~30x slower has been seen under
    heavier load). Neither count is right everywhere, so the loop measures, and measures again
    when steps slow down.
    """
    candidates = thread_candidates()
    for n in candidates:  # the first steps at a thread count start its pool: not timed
        torch.set_num_threads(n)
        time_step()
    times = {n: math.inf for n in candidates}
    for _ in range(3):  # interleaved, so a burst of load hits every candidate alike
        for n in candidates:
            torch.set_num_threads(n)
            times[n] = min(times[n], time_step())
    best = min(times, key=lambda n: times[n])
    torch.set_num_threads(best)
    return best, times


class ThreadTuner:
    """Keeps the fastest CPU thread count: measures at the start, and again (at most every
    `every` seconds) when a step takes `slower`x longer than it did just after measuring."""

    def __init__(self, time_step: Callable[[], float], slower: float = 1.6, every: float = 30.0):
        self.time_step = time_step
        self.slower = slower
        self.every = every
        self.threads = 1
        self.timings: dict[int, float] = {}
        self._typical: float | None = None
        self._tuned_at = 0.0

    def tune(self, now: float = 0.0) -> int:
        self.threads, self.timings = fastest_threads(self.time_step)
        self._typical, self._tuned_at = None, now
        return self.threads

    def observe(self, step_seconds: float, now: float) -> bool:
        """Record a step time; measure again if steps slowed down. True if it measured."""
        if self._typical is None:
            self._typical = step_seconds
            return False
        if step_seconds > self.slower * self._typical and now - self._tuned_at > self.every:
            self.tune(now)
            return True
        return False


class PeakMemory:
    """The peak CUDA allocation of the work inside `with PeakMemory(device) as peak:`, in bytes
    above what was allocated at the start; None on other devices, which keep no such count
    (training.memory counts a step's tensors on any device)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None
        self._baseline = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline


def describe_machine(device: torch.device) -> dict[str, object]:
    """What a measurement ran on: CPU model, cores, the GPU if one is used, torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}
