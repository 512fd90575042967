"""Checkpoints: training state (torch), and torch models from weights files.

A checkpoint is a dict of tensors, numbers and strings written by `torch.save` and read with
`torch.load(weights_only=True)`, which refuses to unpickle anything else: a crafted file cannot
run code. Writes go to a temporary file that is fsynced and renamed over the old one, so a crash
or `kill -9` at any moment leaves either the old or the new checkpoint, never a torn one. Loads
check the zip archive's CRC-32 of every member first (torch.load does not): a damaged file is
refused, never trained on.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcli.errors import InputError
from lmcli.files import FORMAT_VERSION, atomic_write, readable_format
from lmcli.weights import Weights, read_weights, resolve_weights

if TYPE_CHECKING:
    import torch

    from lmcli.models import LanguageModel


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch  # here, not above: lmcli sample's numpy path reads checkpoints without torch

    atomic_write(path, lambda f: torch.save({"schema_version": FORMAT_VERSION, **state}, f))


def check_archive(path: Path) -> None:
    """Refuse a file that is not a whole torch.save archive: not a zip, or a member whose bytes
    fail their CRC-32 (damaged on disk or in transit)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError):
        raise InputError(
            f"{path} is not a loadable lmcli checkpoint (truncated or foreign file: not a whole "
            "torch.save archive)"
        ) from None
    if bad is not None:
        raise InputError(f"{path} is damaged: its part {bad!r} fails its CRC check")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    check_archive(path)
    try:
        with warnings.catch_warnings():
            # A foreign pickle draws a warning about its protocol before the error we report.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        asked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it asks for {asked.group(1)}" if asked else "it holds more than tensors and data"
        raise InputError(f"{path} is refused: not a plain torch.save file ({what})") from None
    except Exception as exc:
        # Whatever a damaged or foreign file makes the unpickler trip on (EOFError, OSError from
        # a seek past the end, KeyError from a bogus memo reference, ...) means the same thing.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path} is not a loadable lmcli checkpoint (truncated or foreign file: {first[:100]})"
        ) from None
    if not isinstance(state, dict) or not readable_format(state.get("schema_version")):
        raise InputError(f"{path} is not an lmcli checkpoint of schema 1 or 2")
    return state


def model_from_weights(weights: Weights) -> LanguageModel:
    """The torch model of a weights file, loaded strictly (every tensor, no other), on the CPU."""
    import safetensors.torch

    from lmcli.models import build_model

    model = build_model(weights.config)
    safetensors.torch.load_model(model, str(weights.path), strict=True)
    return model.eval()


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[LanguageModel, Weights]:
    """The torch model of a run directory or weights file (lmcli 0.1's .pt converted once), on
    `device`, with what its file says of it."""
    weights = read_weights(resolve_weights(path).path)
    return model_from_weights(weights).to(device), weights
