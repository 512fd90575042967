"""Opening a trained model for sampling: a run directory or a checkpoint file, plus its tokenizer.

A run directory gives its best.pt (the weights of the best validation loss), or last.pt when no
evaluation has improved yet; a checkpoint file gives itself. The tokenizer is the one beside the
checkpoint (`lmcli train` copies it into the run directory).

The checkpoint is read with `torch.load(weights_only=True)` (lmcli.checkpoints), so a crafted file
cannot run code, and onto the CPU whatever device wrote it: a checkpoint from a GPU loads on a
machine without one. The model is rebuilt from the JSON "model_config" the checkpoint carries,
loaded strictly, and moved to the requested device.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmcli.checkpoints import load_checkpoint
from lmcli.config import ModelConfig
from lmcli.errors import InputError, LmcliError
from lmcli.models import LanguageModel, build_model
from lmcli.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from lmcli.training.rundir import BEST, LAST


@dataclass(frozen=True)
class LoadedModel:
    model: LanguageModel  # in eval mode, on the requested device
    tokenizer: Tokenizer
    config: ModelConfig
    checkpoint: Path
    step: int | None  # the training step the weights are from, when the checkpoint says


def find_checkpoint(path: Path) -> Path:
    """The checkpoint a run directory (best.pt, else last.pt) or a file argument names."""
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise InputError(
            f"{path} holds no checkpoint ({BEST} or {LAST})",
            hint="pass a run directory made by lmcli train, or a .pt file",
        )
    if not path.exists():
        raise InputError(f"no such run directory or checkpoint: {path}")
    return path


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Load the model and tokenizer of a run directory or checkpoint file onto `device`."""
    checkpoint = find_checkpoint(path)
    state = load_checkpoint(checkpoint, map_location="cpu")
    cfg = model_config(state, checkpoint)
    try:
        model = build_model(cfg)
    except LmcliError as exc:
        raise InputError(f"{checkpoint}: its model config is invalid: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # a field of the wrong type
        raise InputError(f"{checkpoint}: its model config is invalid ({exc})") from None
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise InputError(f"{checkpoint} holds no model weights")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(
            f"{checkpoint}: the weights do not fit its model config ({first})"
        ) from None
    tokenizer = load_tokenizer(checkpoint.parent)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise InputError(
            f"the tokenizer in {checkpoint.parent} has {tokenizer.vocab_size} tokens but the "
            f"model {cfg.vocab_size}",
            hint="keep a checkpoint beside the tokenizer.json of the data it was trained on",
        )
    step = state.get("step")
    return LoadedModel(
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        config=cfg,
        checkpoint=checkpoint,
        step=step if isinstance(step, int) else None,
    )


def model_config(state: dict[str, Any], checkpoint: Path) -> ModelConfig:
    """The ModelConfig a checkpoint was trained with (its "model_config": JSON of the fields)."""
    raw = state.get("model_config")
    if not isinstance(raw, str):
        raise InputError(f"{checkpoint} has no model config: not a checkpoint of an lmcli model")
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError:
        raise InputError(f"{checkpoint}: its model config is not valid JSON") from None
    if not isinstance(fields, dict):
        raise InputError(f"{checkpoint}: its model config is not a JSON object")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise InputError(
            f"{checkpoint}: unknown model config fields: {', '.join(unknown)}",
            hint="it was probably written by a newer lmcli",
        )
    return ModelConfig(**fields)


def encode_prompt(tokenizer: Tokenizer, text: str, drop_unknown: bool = False) -> list[int]:
    """The prompt's token ids. A char vocabulary cannot encode characters it has never seen: they
    are an InputError naming them, or dropped with `drop_unknown`."""
    if drop_unknown and isinstance(tokenizer, CharTokenizer):
        known = set(tokenizer.chars)
        text = "".join(ch for ch in text if ch in known)
    try:
        return [int(i) for i in tokenizer.encode(text)]
    except InputError as exc:
        raise InputError(
            f"the prompt has {exc.message}", hint="change the prompt, or pass --drop-unknown"
        ) from None


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The characters of `text` a char vocabulary lacks (none for byte-level BPE)."""
    if not isinstance(tokenizer, CharTokenizer):
        return []
    known = set(tokenizer.chars)
    return sorted({ch for ch in text if ch not in known})
