"""Checkpoints: atomic writes, safe loads, a schema version.

A checkpoint is a dict of tensors, numbers and strings written by `torch.save` and read with
`torch.load(weights_only=True)`, which refuses to unpickle anything else: a crafted file cannot
run code. Writes go to a temporary file that is fsynced and renamed over the old one, so a crash
or `kill -9` at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcli.errors import InputError

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch  # here, not above: lmcli sample's numpy path reads checkpoints without torch

    _atomic(path, lambda f: torch.save({"schema_version": SCHEMA_VERSION, **state}, f))


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # Make the rename itself durable.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            # A foreign pickle draws a warning about its protocol before the error we report.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        # Whatever a damaged or foreign file makes the unpickler or the zip reader trip on
        # (UnpicklingError, EOFError, BadZipFile, OSError from a seek past the end, KeyError
        # from a bogus memo reference, ...) means the same thing: not a checkpoint we can read.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path} is not a loadable lmcli checkpoint (truncated or foreign file: {first[:120]})"
        ) from None
    if not isinstance(state, dict) or state.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path} is not an lmcli checkpoint of schema {SCHEMA_VERSION}")
    return state
