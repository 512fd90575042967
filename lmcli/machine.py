"""Facts about the machine at hand that lmcli checks before it commits to work: memory and disk.

Torch-free, so that `lmcli sample` can size its arrays before it allocates them without
importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmcli.errors import ConfigError

# Refuse work that needs more than this share of the available memory: the rest of the process
# (Python, torch, the allocator's slack) and the rest of the machine need some too.
MEMORY_SHARE = 0.9


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, what: str, hint: str, available: int | None = None) -> None:
    """Refuse `what` if it needs more than MEMORY_SHARE of the available memory."""
    available = available_memory() if available is None else available
    if available is None or need <= MEMORY_SHARE * available:
        return
    raise ConfigError(
        f"{what} needs ≈{format_bytes(need)} of memory, but this machine has "
        f"{format_bytes(available)} available",
        hint=hint,
    )


def free_disk(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    for candidate in (path, *path.absolute().parents):
        try:
            stat = os.statvfs(candidate)
        except OSError:
            continue
        return stat.f_bavail * stat.f_frsize
    return None
