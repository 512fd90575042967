"""Opening a trained model for generation: a run directory or a weights file, its tokenizer, and
the engine that runs it (lmcli/sampling/engines).

A run directory gives its best.safetensors (the weights of the best validation loss), else
last.safetensors; a weights file gives itself; an lmcli 0.1 checkpoint is converted once
(lmcli.weights.resolve_weights). The tokenizer is the one beside the weights (`lmcli train`
copies it into the run directory). On the CPU nothing here imports torch unless the torch
engine has to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmcli.config import ModelConfig
from lmcli.errors import InputError
from lmcli.machine import check_memory
from lmcli.sampling.engines import open_engine
from lmcli.sampling.generate import Engine, decode_memory
from lmcli.tokenizers import Tokenizer, load_tokenizer
from lmcli.weights import Weights, read_weights, resolve_weights


@dataclass(frozen=True)
class Opened:
    """A model ready to generate, whichever engine runs it."""

    engine: Engine
    engine_name: str  # what runs the network: "C", "numpy" or "torch" (and why, if a fallback)
    tokenizer: Tokenizer
    config: ModelConfig
    weights: Path
    step: int | None
    params: int
    device: str
    note: str | None  # how an lmcli 0.1 checkpoint was converted, if one was


def open_model(path: Path, device: str = "cpu", engine: str = "auto") -> Opened:
    """Open a run directory or weights file for generation on `device` ("cpu", "auto", "cuda",
    ...); `engine` forces one (see lmcli.sampling.engines.open_engine)."""
    resolved = resolve_weights(path)
    weights = read_weights(resolved.path)
    check_model_memory(weights.config)
    tokenizer = tokenizer_of(weights)
    runner, name = open_engine(weights, device, engine)
    return Opened(
        engine=runner,
        engine_name=name,
        tokenizer=tokenizer,
        config=weights.config,
        weights=weights.path,
        step=weights.step,
        params=weights.params,
        device="cpu" if name != "torch" else device,
        note=resolved.note,
    )


def tokenizer_of(weights: Weights) -> Tokenizer:
    """The tokenizer beside a weights file, refused if its vocabulary is not the model's."""
    tokenizer = load_tokenizer(weights.path.parent)
    if tokenizer.vocab_size != weights.config.vocab_size:
        raise InputError(
            f"the tokenizer in {weights.path.parent} has {tokenizer.vocab_size} tokens but the "
            f"model {weights.config.vocab_size}",
            hint="keep a weights file beside the tokenizer.json of the data it was trained on",
        )
    return tokenizer


def check_model_memory(cfg: ModelConfig) -> None:
    """Refuse a model whose tables and cache (sized by its config: a context of 10^9 is a
    config's word, not a weight's) would not fit, before any is built."""
    check_memory(decode_memory(cfg, 1, 1), "this model's position tables and cache",
                 hint="its config is probably damaged (look at its context)")  # fmt: skip
