"""The training loop: one function, `train`, driven by a ModelConfig and a TrainConfig.

It reports through `on_event` (the CLI draws progress from those events) and never prints. It
stops at the budget, on `should_stop()` (the CLI's Ctrl-C handler), or with TrainingDiverged on a
non-finite loss; in every case the last good checkpoint stays on disk.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lmcli.checkpoints import load_checkpoint, save_checkpoint
from lmcli.config import ModelConfig, TrainConfig
from lmcli.corpus.tokenfiles import TokenMeta, open_tokens
from lmcli.devices import Placement, ThreadTuner, configure_threads, resolve_placement
from lmcli.errors import ConfigError, LmcliError
from lmcli.models import build_model
from lmcli.training import distributed, rundir
from lmcli.training.data import TrainBatches
from lmcli.training.evaluate import Evaluation, evaluate
from lmcli.training.optim import build_optimizer
from lmcli.training.schedule import learning_rate, progress


class TrainingDiverged(LmcliError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Started:
    params: int
    device: str
    dtype: str
    threads: int
    compiled: bool
    world_size: int
    tokens_per_step: int
    memory_estimate_bytes: int
    step_seconds_estimate: float
    start_step: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Logged:
    step: int
    loss: float
    lr: float
    tokens_per_s: float
    progress: float
    train_seconds: float
    eta_seconds: float | None


@dataclass(frozen=True)
class Evaluated:
    step: int
    evaluation: Evaluation
    best: bool
    train_seconds: float


Event = Started | Logged | Evaluated


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    params: int
    steps: int
    tokens_seen: int
    train_seconds: float
    wall_seconds: float
    tokens_per_s: float
    best_val_loss: float
    best_val_bpb: float
    last_val_loss: float
    checkpoint: Path
    interrupted: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out["run_dir"], out["checkpoint"] = str(self.run_dir), str(self.checkpoint)
        return {**out, **self.extra}


def _noop(event: Event) -> None:
    pass


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    token_dir: Path,
    run_dir: Path,
    resume: bool = False,
    on_event: Callable[[Event], None] = _noop,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train (or resume) the run in `run_dir` on the token files in `token_dir`."""
    try:
        return _train(model_cfg, cfg, token_dir, run_dir, resume, on_event, should_stop)
    except torch.OutOfMemoryError:
        raise LmcliError(
            f"out of memory on {cfg.device} with --batch-size {cfg.batch_size}",
            hint="use a smaller --batch-size (with --grad-accum to keep the batch), a smaller "
            "model or --context, or --device cpu",
        ) from None


def _train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    token_dir: Path,
    run_dir: Path,
    resume: bool,
    on_event: Callable[[Event], None],
    should_stop: Callable[[], bool],
) -> TrainResult:
    wall_start = time.perf_counter()
    placement = resolve_placement(cfg.device, cfg.dtype)
    dist = distributed.setup(placement.device)
    device = dist.device(placement.device)
    threads = configure_threads(cfg.threads)
    if cfg.grad_accum % dist.world_size != 0:
        raise ConfigError(
            f"--grad-accum {cfg.grad_accum} must be a multiple of the {dist.world_size} processes",
            hint="the global batch is batch_size * grad_accum, split over the processes",
        )
    meta = TokenMeta.load(token_dir)
    check_data_fits(meta, model_cfg)
    train_tokens, val_tokens = open_tokens(token_dir, "train"), open_tokens(token_dir, "val")
    bytes_per_token = meta.bytes_per_token("val")

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=placement.needs_grad_scaler)
    step, train_seconds, tokens_seen = 0, 0.0, 0
    best_loss, best_bpb, last_loss = math.inf, math.inf, math.inf
    if resume:
        state = load_checkpoint(run_dir / rundir.LAST, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, train_seconds, tokens_seen = state["step"], state["train_seconds"], state["tokens"]
        best_loss, best_bpb = state["best_val_loss"], state["best_val_bpb"]
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        if dist.is_main:
            rundir.truncate_metrics(run_dir, step)

    compiled = cfg.compile if cfg.compile is not None else device.type == "cuda"
    forward_model = cast(nn.Module, torch.compile(model)) if compiled else model
    forward_model = dist.wrap(forward_model)
    accum = cfg.grad_accum // dist.world_size
    batches = TrainBatches(train_tokens, cfg.batch_size, model_cfg.context, cfg.seed, dist.rank)
    tokens_per_step = cfg.batch_size * model_cfg.context * cfg.grad_accum
    autocast = torch.autocast(device.type, placement.dtype, enabled=placement.autocast)

    def micro_step(x: torch.Tensor, y: torch.Tensor, sync: bool) -> torch.Tensor:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with dist.no_sync(forward_model, sync), autocast:
            _, loss = forward_model(x, y)
        scaler.scale(loss / accum).backward()
        return loss.detach()

    def time_step() -> float:
        return _time_one_step(micro_step, batches, accum, device, model)

    notes = list(placement.notes)
    tuner = ThreadTuner(time_step) if threads is None and device.type == "cpu" else None
    if tuner is not None:
        threads = tuner.tune()
        tried = ", ".join(f"{n}: {t * 1000:.0f} ms" for n, t in tuner.timings.items())
        notes.append(f"threads: a step took {tried}; using {threads} (--threads to fix it)")
    step_estimate = time_step()
    on_event(
        Started(
            params=model.num_params(),
            device=str(device),
            dtype=str(placement.dtype).removeprefix("torch."),
            threads=threads or torch.get_num_threads(),
            compiled=compiled,
            world_size=dist.world_size,
            tokens_per_step=tokens_per_step,
            memory_estimate_bytes=_memory_estimate(model, model_cfg, cfg, placement),
            step_seconds_estimate=step_estimate,
            start_step=step,
            notes=tuple(notes),
        )
    )

    def save(kind: str) -> None:
        if not dist.is_main:
            return
        state = {
            "model_config": json.dumps(model_cfg.__dict__),
            "model": model.state_dict(),
            "step": step,
            "tokens": tokens_seen,
            "train_seconds": train_seconds,
            "best_val_loss": best_loss,
            "best_val_bpb": best_bpb,
        }
        if kind == rundir.BEST:
            save_checkpoint(run_dir / rundir.BEST, state)
            return
        state.update(
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            rng_cpu=torch.get_rng_state(),
        )
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(run_dir / rundir.LAST, state)

    metrics = (run_dir / rundir.METRICS).open("a", encoding="utf-8") if dist.is_main else None

    def record(row: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()

    last_eval = train_seconds  # the training time of the last evaluation (or of the start)

    def run_eval() -> Evaluation:
        nonlocal best_loss, best_bpb, last_loss, last_eval
        last_eval = train_seconds
        result = evaluate(
            model, val_tokens, model_cfg.context, bytes_per_token, device, placement.dtype
        )
        if not math.isfinite(result.loss):
            raise _diverged(step, run_dir)
        last_loss = result.loss
        improved = result.loss < best_loss
        if improved:
            best_loss, best_bpb = result.loss, result.bits_per_byte
        save(rundir.LAST)
        if improved:
            save(rundir.BEST)
        record({"step": step, "kind": "eval", "val_loss": result.loss,
                "val_bpb": result.bits_per_byte, "val_ppl": result.perplexity,
                "train_seconds": round(train_seconds, 3), "tokens": tokens_seen})  # fmt: skip
        on_event(Evaluated(step, result, improved, train_seconds))
        return result

    def budget_left() -> bool:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            return False
        return cfg.max_time is None or train_seconds < cfg.max_time

    interrupted = False
    model.train()
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    window_start, window_tokens = train_seconds, 0
    try:
        while budget_left():
            if dist.agree(should_stop()):
                interrupted = True
                break
            t0 = time.perf_counter()
            lr = learning_rate(cfg, step, train_seconds)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            for micro in range(accum):
                loss_sum += micro_step(*batches.get(step, micro), sync=micro == accum - 1)
                loss_count += 1
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
            # foreach: one kernel per op for all gradients (the default loops per tensor on CPU).
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
            if scaler.is_enabled():
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            logging = step % cfg.log_every == 0 or not budget_left()
            if logging and device.type == "cuda":
                torch.cuda.synchronize(device)  # so the clock sees the real step time
            train_seconds += time.perf_counter() - t0
            if logging:
                loss = dist.mean(loss_sum).item() / loss_count
                if not math.isfinite(loss):
                    raise _diverged(step, run_dir)
                rate = window_tokens / max(train_seconds - window_start, 1e-9)
                done = progress(cfg, step, train_seconds)
                eta = None
                if cfg.max_steps is not None or cfg.max_time is not None:
                    eta = (1 - done) * train_seconds / max(done, 1e-9)
                record({"step": step, "kind": "train", "loss": loss, "lr": lr,
                        "tokens_per_s": rate, "train_seconds": round(train_seconds, 3),
                        "tokens": tokens_seen})  # fmt: skip
                on_event(Logged(step, loss, lr, rate, done, train_seconds, eta))
                if tuner is not None:
                    # If something else took the cores, steps slow down: measure again.
                    t_tune = time.perf_counter()
                    if tuner.observe(tokens_per_step / rate, train_seconds):
                        train_seconds += time.perf_counter() - t_tune
                loss_sum.zero_()
                loss_count = 0
                window_start, window_tokens = train_seconds, 0
            due = cfg.eval_interval is not None and train_seconds - last_eval >= cfg.eval_interval
            if (step % cfg.eval_every == 0 or due) and budget_left():
                run_eval()
        run_eval()
    finally:
        if metrics is not None:
            metrics.close()
        dist.teardown()
    return TrainResult(
        run_dir=run_dir,
        params=model.num_params(),
        steps=step,
        tokens_seen=tokens_seen,
        train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - wall_start,
        tokens_per_s=tokens_seen / max(train_seconds, 1e-9),
        best_val_loss=best_loss,
        best_val_bpb=best_bpb,
        last_val_loss=last_loss,
        checkpoint=run_dir / rundir.BEST,
        interrupted=interrupted,
    )


def check_data_fits(meta: TokenMeta, model_cfg: ModelConfig) -> None:
    """Each split must hold at least one window of context + 1 tokens."""
    for name, split in (("training", "train"), ("validation", "val")):
        tokens = meta.splits[split].tokens
        if tokens < model_cfg.context + 1:
            raise ConfigError(
                f"--context {model_cfg.context} is longer than the {name} split "
                f"({tokens:,} tokens)",
                hint="use a smaller --context or a larger corpus / --val-fraction",
            )
    if meta.vocab_size != model_cfg.vocab_size:
        raise ConfigError(
            f"the model's vocabulary ({model_cfg.vocab_size}) is not the data's ({meta.vocab_size})"
        )


def _time_one_step(
    micro_step: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor],
    batches: TrainBatches,
    accum: int,
    device: torch.device,
    model: nn.Module,
) -> float:
    """Seconds for one forward + backward of a real batch, without changing anything: it warms
    up kernels (and compiles) and then restores the RNG and drops the gradients."""
    rng = torch.get_rng_state()
    t0 = time.perf_counter()
    micro_step(*batches.get(0, 0), False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - t0) * accum
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    return seconds


def _memory_estimate(
    model: nn.Module, model_cfg: ModelConfig, cfg: TrainConfig, placement: Placement
) -> int:
    """Rough bytes: weights, gradients and two AdamW moments in float32, plus activations
    (about 16 values of width C per token per layer, and the logits)."""
    params = sum(p.numel() for p in model.parameters())
    act_bytes = 2 if placement.autocast else 4
    tokens = cfg.batch_size * model_cfg.context
    activations = tokens * (16 * model_cfg.width * model_cfg.layers + 2 * model_cfg.vocab_size)
    return 16 * params + act_bytes * activations


def _diverged(step: int, run_dir: Path) -> TrainingDiverged:
    last = run_dir / rundir.LAST
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was saved"
    return TrainingDiverged(
        f"the loss became NaN or infinite at step {step}; {kept}",
        hint="lower --lr, raise --warmup, or use --dtype float32",
    )
