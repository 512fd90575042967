"""Opening a trained model for sampling: a run directory or a checkpoint file, plus its tokenizer.

A run directory gives its best.pt (the weights of the best validation loss), or last.pt when no
evaluation has improved yet; a checkpoint file gives itself. The tokenizer is the one beside the
checkpoint (`lmcli train` copies it into the run directory).

On the CPU the weights go to the numpy engine (sampling/numpy_engine.py), read by
lmcli.torchfile without importing torch at all; on a GPU (or with engine="torch") the torch model
is rebuilt, loaded strictly with `torch.load(weights_only=True)` and moved to the device. Both
readers refuse anything but tensors and plain data, so a crafted file cannot run code, and both
read a checkpoint written on any device. The model is rebuilt from the JSON "model_config" the
checkpoint carries.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcli.checkpoints import SCHEMA_VERSION
from lmcli.config import ModelConfig
from lmcli.errors import InputError, LmcliError
from lmcli.machine import check_memory
from lmcli.rundir import BEST, LAST
from lmcli.sampling.generate import Engine, decode_memory
from lmcli.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from lmcli.torchfile import read_torch_file
from lmcli.weights import check_shapes

if TYPE_CHECKING:
    import torch

    from lmcli.models import LanguageModel
    from lmcli.sampling.kernel import Kernel


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


@dataclass(frozen=True)
class Loaded:
    """A model ready to generate, whichever engine runs it."""

    engine: Engine
    tokenizer: Tokenizer
    config: ModelConfig
    checkpoint: Path
    step: int | None
    params: int
    device: str
    engine_name: str  # what runs the network: "torch", "C" (sampling/decode.c) or "numpy"


def load(path: Path, device: str = "cpu", engine: str = "auto") -> Loaded:
    """Open a run directory or checkpoint for generation on `device` ("cpu", "auto", "cuda",
    ...). engine "auto" is the numpy engine on the CPU, running a transformer in C when
    sampling/decode.c compiles (sampling/kernel.py), and torch elsewhere; "numpy" (numpy alone)
    or "torch" forces one."""
    if engine not in ("auto", "numpy", "torch"):
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "numpy" or (engine == "auto" and device == "cpu"):
        return _load_numpy(path, use_kernel=engine == "auto")
    from lmcli.devices import resolve_device
    from lmcli.sampling.torch_engine import TorchEngine

    resolved = resolve_device(device)
    if engine == "auto" and resolved.type == "cpu":
        return _load_numpy(path, use_kernel=True)
    loaded = load_model(path, resolved)
    return Loaded(
        engine=TorchEngine(loaded.model),
        tokenizer=loaded.tokenizer,
        config=loaded.config,
        checkpoint=loaded.checkpoint,
        step=loaded.step,
        params=loaded.model.num_params(),
        device=str(resolved),
        engine_name="torch",
    )


def _load_numpy(path: Path, use_kernel: bool) -> Loaded:
    from lmcli.sampling.kernel import load_kernel
    from lmcli.sampling.numpy_engine import NumpyEngine, build_engine

    checkpoint = find_checkpoint(path)
    state = read_torch_file(checkpoint)
    if not isinstance(state, dict) or state.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{checkpoint} is not an lmcli checkpoint of schema {SCHEMA_VERSION}")
    cfg = model_config(state, checkpoint)
    _validate(cfg, checkpoint)
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(
        isinstance(v, np.ndarray) for v in weights.values()
    ):
        raise InputError(f"{checkpoint} holds no model weights")
    check_shapes(cfg, {k: v.shape for k, v in weights.items()}, str(checkpoint))
    check_model_memory(cfg)
    kernel = load_kernel() if use_kernel and cfg.model == "transformer" else None
    try:
        engine = NumpyEngine(build_engine(cfg, weights), kernel and kernel.library)
        engine.start(np.zeros((1, 1), dtype=np.int64))  # a weight of the wrong shape fails here
    except (ValueError, IndexError) as exc:
        raise InputError(
            f"{checkpoint}: the weights do not fit its model config ({str(exc)[:160]})"
        ) from None
    tied = cfg.tie and "head.weight" in weights
    params = sum(v.size for k, v in weights.items() if not (tied and k == "head.weight"))
    step = state.get("step")
    return Loaded(
        engine=engine,
        tokenizer=_tokenizer(checkpoint, cfg),
        config=cfg,
        checkpoint=checkpoint,
        step=step if isinstance(step, int) else None,
        params=params,
        device="cpu",
        engine_name=_numpy_engine_name(kernel),
    )


def _validate(cfg: ModelConfig, checkpoint: Path) -> None:
    try:
        cfg.validate()
    except LmcliError as exc:
        raise InputError(f"{checkpoint}: its model config is invalid: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # a field of the wrong type
        raise InputError(f"{checkpoint}: its model config is invalid ({exc})") from None


def _numpy_engine_name(kernel: Kernel | None) -> str:
    if kernel is None:
        return "numpy"
    if kernel.library is None:
        return f"numpy (no C: {kernel.reason})"
    return "C"


def _tokenizer(checkpoint: Path, cfg: ModelConfig) -> Tokenizer:
    tokenizer = load_tokenizer(checkpoint.parent)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise InputError(
            f"the tokenizer in {checkpoint.parent} has {tokenizer.vocab_size} tokens but the "
            f"model {cfg.vocab_size}",
            hint="keep a checkpoint beside the tokenizer.json of the data it was trained on",
        )
    return tokenizer


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Load the torch model and tokenizer of a run directory or checkpoint file onto `device`."""
    from lmcli.checkpoints import load_checkpoint
    from lmcli.models import build_model

    checkpoint = find_checkpoint(path)
    state = load_checkpoint(checkpoint, map_location="cpu")
    cfg = model_config(state, checkpoint)
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(hasattr(v, "shape") for v in weights.values()):
        raise InputError(f"{checkpoint} holds no model weights")
    _validate(cfg, checkpoint)
    check_shapes(cfg, {k: tuple(v.shape) for k, v in weights.items()}, str(checkpoint))
    check_model_memory(cfg)
    model = build_model(cfg)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(
            f"{checkpoint}: the weights do not fit its model config ({first})"
        ) from None
    tokenizer = _tokenizer(checkpoint, cfg)
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


def check_model_memory(cfg: ModelConfig) -> None:
    """Refuse a model whose tables and cache (sized by its config: a context of 10^9 is a
    config's word, not a weight's) would not fit, before any is built."""
    check_memory(decode_memory(cfg, 1, 1), "this model's position tables and cache",
                 hint="its config is probably damaged (look at its context)")  # fmt: skip


def encode_prompt(
    tokenizer: Tokenizer,
    text: str,
    drop_unknown: bool = False,
    hint: str = "change the prompt, or pass --drop-unknown",
) -> list[int]:
    """The prompt's token ids. A char vocabulary cannot encode characters it has never seen: they
    are an InputError naming them (with `hint`), or dropped with `drop_unknown`."""
    if isinstance(tokenizer, CharTokenizer):
        missing = unknown_characters(tokenizer, text)
        if missing and drop_unknown:
            text = "".join(ch for ch in text if ch not in set(missing))
            if not text:
                shown = ", ".join(repr(ch) for ch in missing[:10])
                raise InputError(
                    f"every character of the prompt was dropped (none is in the char "
                    f"vocabulary: {shown})",
                    hint="give a prompt in the model's characters",
                )
        try:
            return [int(i) for i in tokenizer.encode(text)]
        except InputError as exc:
            raise InputError(f"the prompt has {exc.message}", hint=hint) from None
    try:
        return [int(i) for i in tokenizer.encode(text)]
    except InputError:
        raise InputError(
            "the prompt is not valid Unicode (it holds lone surrogates)",
            hint="give the prompt as UTF-8 text",
        ) from None


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The characters of `text` a char vocabulary lacks (none for byte-level BPE)."""
    if not isinstance(tokenizer, CharTokenizer):
        return []
    known = set(tokenizer.chars)
    return sorted({ch for ch in text if ch not in known})
