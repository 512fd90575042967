"""Validation: mean loss over every non-overlapping window of the validation split, and the same
in bits per byte, the unit that compares models whatever their tokenizer; `evaluate_run` measures
any run's weights that way on any text (`lmcli eval`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lmcli.config import EvalConfig
from lmcli.errors import ConfigError, InputError
from lmcli.training.data import val_windows


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy per token, in nats
    perplexity: float
    bits_per_byte: float
    tokens: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    context: int,
    bytes_per_token: float,
    device: torch.device,
    autocast_dtype: torch.dtype,
    batch_size: int = 64,
) -> Evaluation:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in val_windows(tokens, context, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
            _, loss = model(x, y)
        total += loss.double() * y.numel()
        count += y.numel()
    model.train(was_training)
    mean = total.item() / max(count, 1)
    return Evaluation(
        loss=mean,
        perplexity=math.exp(min(mean, 700.0)),
        bits_per_byte=mean / math.log(2) / bytes_per_token,
        tokens=count,
    )


@torch.no_grad()
def loss_by_position(
    model: nn.Module,
    tokens: np.ndarray,
    context: int,
    device: torch.device,
    autocast_dtype: torch.dtype,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean validation loss (nats) at each position 0..T-1 of a window, over the windows
    `evaluate` uses: position t predicts its token from t + 1 tokens of context. How fast the
    curve falls with t shows how much a model gains from longer context. Its mean is
    `evaluate`'s loss."""
    was_training = model.training
    model.eval()
    total = torch.zeros(context, dtype=torch.float64, device=device)  # (T,)
    windows = 0
    for x, y in val_windows(tokens, context, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
            logits, _ = model(x)  # (B, T, V)
        losses = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, T)
        total += losses.double().sum(dim=0)
        windows += y.shape[0]
    model.train(was_training)
    return (total / max(windows, 1)).cpu().numpy()


@dataclass(frozen=True)
class RunEvaluation:
    """`lmcli eval`: one run's weights measured on one stream of tokens."""

    run: str
    weights: str
    step: int | None  # the training step the weights are from
    data: str  # what was measured: "<token dir> (val split)" or the text given
    tokens: int  # tokens predicted: every non-overlapping window of the context
    windows: int
    context: int
    loss: float
    perplexity: float
    bits_per_byte: float
    bytes_per_token: float
    bpb_by_position: list[float] | None  # positions 1..T of the window
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate_run(cfg: EvalConfig) -> RunEvaluation:
    """Loss, perplexity and bits per byte of a run's weights (best.safetensors, or the file
    given) over every window of its validation split, another split, a token directory made
    with its tokenizer, or a text encoded with it."""
    from lmcli.checkpoints import model_from_weights
    from lmcli.devices import configure_threads, resolve_placement
    from lmcli.weights import read_weights, resolve_weights

    cfg.validate()
    resolved = resolve_weights(cfg.run)
    weights = read_weights(resolved.path)
    run_dir = cfg.run if cfg.run.is_dir() else cfg.run.parent
    tokens, bytes_per_token, what, notes = _eval_tokens(cfg, run_dir)
    context = weights.config.context
    if len(tokens) < context + 1:
        raise InputError(
            f"{what} holds {len(tokens):,} tokens: too few for one window of the model's "
            f"context of {context} (+1 to predict)",
            hint="evaluate on a longer text",
        )
    placement = resolve_placement(cfg.device, "float32")
    configure_threads(cfg.threads if cfg.threads is not None else 1)
    model = model_from_weights(weights).to(placement.device)
    result = evaluate(model, tokens, context, bytes_per_token, placement.device, torch.float32,
                      cfg.batch_size)  # fmt: skip
    by_position = None
    if cfg.by_position:
        losses = loss_by_position(model, tokens, context, placement.device, torch.float32,
                                  cfg.batch_size)  # fmt: skip
        by_position = [float(v) / math.log(2) / bytes_per_token for v in losses]
    return RunEvaluation(
        run=str(run_dir),
        weights=str(resolved.path),
        step=weights.step,
        data=what,
        tokens=result.tokens,
        windows=result.tokens // context,
        context=context,
        loss=result.loss,
        perplexity=result.perplexity,
        bits_per_byte=result.bits_per_byte,
        bytes_per_token=bytes_per_token,
        bpb_by_position=by_position,
        notes=[n for n in (resolved.note, *notes) if n],
    )


def _eval_tokens(cfg: EvalConfig, run_dir: Path) -> tuple[np.ndarray, float, str, list[str]]:
    """The tokens to measure, their bytes per token, what they are, and notes."""
    from lmcli import rundir
    from lmcli.corpus.prepare import encode_text
    from lmcli.corpus.tokenfiles import META_FILE, TokenMeta, open_tokens, verify_tokens
    from lmcli.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(run_dir)
    if cfg.data is None or (Path(cfg.data) / META_FILE).is_file():
        token_dir = rundir.load_config(run_dir).data if cfg.data is None else Path(cfg.data)
        if cfg.data is not None and load_tokenizer(token_dir).fingerprint() != (
            tokenizer.fingerprint()
        ):
            raise InputError(
                f"{token_dir} was tokenized with another tokenizer than {run_dir}'s",
                hint="pass the text instead: it is then encoded with the run's tokenizer",
            )
        meta = TokenMeta.load(token_dir)
        verify_tokens(token_dir, meta)
        tokens = np.asarray(open_tokens(token_dir, cfg.split))
        return tokens, meta.bytes_per_token(cfg.split), f"{token_dir} ({cfg.split} split)", []
    if cfg.split != "val":
        raise ConfigError("--split applies to a token directory; a text is measured whole")
    text = encode_text(cfg.data, tokenizer, str(run_dir), drop_unknown=cfg.drop_unknown)
    notes = [f"{text.dropped:,} characters outside the vocabulary left out"] if text.dropped else []
    return text.tokens, text.bytes / max(len(text.tokens), 1), cfg.data, notes
