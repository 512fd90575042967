"""The training loop: `train`, driven by a ModelConfig and a TrainConfig, in nanoGPT's shape.

A `Trainer` holds one run's state (model, optimizer, step, clock, best loss) and does each part
of the loop: `step` (forward, backward, clip, update), `log`, `evaluate`, `save`, `resume`. The
loop itself is the dozen lines of `_train`.

It reports through `on_event` (the CLI draws progress from those events) and never prints. It
stops at the budget, on `should_stop()` (the CLI's Ctrl-C / SIGTERM handler: it then saves
last.pt before anything else, evaluates if this step was not evaluated yet, and returns), or
with TrainingDiverged on a non-finite loss; in every case the last good checkpoint stays on disk.
The caller holds the run directory (lmcli.rundir.new_run / existing_run): one writer at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lmcli import rundir
from lmcli.checkpoints import load_checkpoint, save_checkpoint
from lmcli.config import ModelConfig, SampleConfig, TrainConfig, parse_seq_warmup
from lmcli.corpus.tokenfiles import TokenMeta, open_tokens, verify_tokens
from lmcli.devices import Placement, ThreadTuner, capped_threads, resolve_placement
from lmcli.errors import ConfigError, InputError, LmcliError
from lmcli.machine import check_memory
from lmcli.models import LanguageModel, build_model
from lmcli.training import distributed
from lmcli.training.data import TrainBatches
from lmcli.training.evaluate import Evaluation, evaluate
from lmcli.training.memory import estimate_step_memory
from lmcli.training.optim import build_optimizer
from lmcli.training.schedule import check_seq_warmup, learning_rate, progress, seq_len
from lmcli.weights import parameter_count, save_weights, table_bytes

# What last.pt holds besides the weights, each with its type: --resume refuses a file without it.
TRAINING_STATE = {"optimizer": dict, "scaler": dict, "rng_cpu": torch.Tensor, "step": int,
                  "tokens": int, "train_seconds": float, "best_val_loss": float,
                  "best_val_bpb": float}  # fmt: skip


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


@dataclass(frozen=True)
class Sampled:
    """--sample-every: what the model writes now, from the same prompt and seed each time."""

    step: int
    text: str


@dataclass(frozen=True)
class Saved:
    """last.pt was written when training stopped early (the CLI says how to resume)."""

    step: int
    path: Path


Event = Started | Logged | Evaluated | Sampled | Saved
SAMPLE_TOKENS = 100
# --compile auto compiles a transformer on a CPU when the run will train this long. The default
# model's step ran ~1.45x faster compiled; compiling it took 67 s the first time on 2 cores and
# ~4 s once torch had cached it (README, the 3-minute recipe's fifth round).
COMPILE_PAYS_SECONDS = 120.0


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    params: int
    steps: int
    tokens_seen: int
    train_seconds: float
    wall_seconds: float
    # Compiling before the clock started (--compile): in wall_seconds, not in train_seconds.
    compile_seconds: float
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
    init_from: Path | None = None,
) -> TrainResult:
    """Train (or resume) the run in `run_dir` on the token files in `token_dir`; `init_from`, a
    weights file of the same architecture, is where a warm start's parameters begin."""
    try:
        return _train(model_cfg, cfg, token_dir, run_dir, resume, on_event, should_stop,
                      init_from)  # fmt: skip
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
    init_from: Path | None,
) -> TrainResult:
    trainer = Trainer(model_cfg, cfg, token_dir, run_dir, on_event, init_from)
    try:
        if resume:
            trainer.resume()
        trainer.start()
        if init_from is not None and trainer.state.evaluated_step < 0:
            trainer.evaluate()  # step 0: where the source's weights stand on this data
        interrupted = False
        while trainer.budget_left():
            if trainer.agree(should_stop()):  # every rank: one clock, one stop
                interrupted = True
                break
            trainer.step()
            if trainer.log_due():
                trainer.log()
            if trainer.eval_due():
                trainer.evaluate()
        trainer.agree(False)  # the last step's time, on every rank alike
        if interrupted:
            trainer.save_state()  # first: a second Ctrl-C or a kill may follow at once
            on_event(Saved(trainer.state.step, run_dir / rundir.STATE))
        if trainer.state.evaluated_step != trainer.state.step:
            trainer.evaluate()
        if trainer.metrics is not None:
            state = trainer.state
            trainer.metrics.end(state.step, state.train_seconds, state.tokens, interrupted)
        return trainer.result(interrupted)
    finally:
        trainer.close()


@dataclass
class RunState:
    """Where training is: what last.pt records besides the tensors."""

    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    best_val_loss: float = math.inf
    best_val_bpb: float = math.inf
    last_val_loss: float = math.inf
    last_eval_seconds: float = 0.0  # training time of the last evaluation (or of the start)
    evaluated_step: int = -1  # the step the last evaluation was at, -1 before any


def torch_seed(seed: int) -> int:
    """torch.manual_seed takes 64 bits; a larger seed is reduced to a 64-bit digest of it."""
    if seed < 2**64:
        return seed
    return int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "little")


class Trainer:
    """One run's training state and the parts of the loop that act on it."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        token_dir: Path,
        run_dir: Path,
        on_event: Callable[[Event], None],
        init_from: Path | None = None,
    ) -> None:
        self.wall_start = time.perf_counter()
        self.model_cfg, self.cfg, self.run_dir, self.on_event = model_cfg, cfg, run_dir, on_event
        self.placement = resolve_placement(cfg.device, cfg.dtype)
        self.dist = distributed.setup(self.placement.device)
        self.device = self.dist.device(self.placement.device)
        self.threads, self.notes = None, list(self.placement.notes)
        self.unagreed_seconds = 0.0  # DDP: this rank's step time not yet on the shared clock
        if cfg.threads is not None:
            self.threads, capped = capped_threads(cfg.threads)
            torch.set_num_threads(self.threads)
            self.notes += [capped] if capped else []
        elif self.dist.active and self.device.type == "cpu":
            # Each rank gets its share of the cores; ranks timing thread counts beside each
            # other (and through collectives) would measure nothing useful.
            self.threads, _ = capped_threads(max(1, (os.cpu_count() or 1) // self.dist.world_size))
            torch.set_num_threads(self.threads)
        if cfg.grad_accum % self.dist.world_size != 0:
            raise ConfigError(
                f"--grad-accum {cfg.grad_accum} must be a multiple of the "
                f"{self.dist.world_size} processes",
                hint="the global batch is batch_size * grad_accum, split over the processes",
            )
        meta = TokenMeta.load(token_dir)
        check_data_fits(meta, model_cfg)
        check_seq_warmup(cfg, model_cfg.context)
        self.memory_estimate = check_training_memory(model_cfg, cfg, self.placement,
                                                     self.dist.world_size)  # fmt: skip
        verify_tokens(token_dir, meta)
        self.train_tokens, self.val_tokens = (open_tokens(token_dir, s) for s in ("train", "val"))
        self.bytes_per_token = meta.bytes_per_token("val")
        self.token_dir = token_dir
        self.evaluations = 0

        torch.manual_seed(torch_seed(cfg.seed))
        self.model: LanguageModel = build_model(model_cfg).to(self.device)
        if init_from is not None:  # a warm start (a resume then loads last.pt over it)
            import safetensors.torch

            safetensors.torch.load_model(self.model, str(init_from), strict=True)
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.placement.needs_grad_scaler)  # fmt: skip
        self.state = RunState()
        # Compiled from the start when asked to or on CUDA; on a CPU, "auto" (cfg.compile None)
        # decides in start(), once a timed step says how long the run will train.
        self.compiled = cfg.compile is True or (cfg.compile is None and self.device.type == "cuda")
        self.compile_seconds = 0.0
        forward = self._compiled_model() if self.compiled else self.model
        self.forward = self.dist.wrap(forward)
        self.accum = cfg.grad_accum // self.dist.world_size
        self.batches = TrainBatches(self.train_tokens, cfg.batch_size, model_cfg.context, cfg.seed,
                                    self.dist.rank)  # fmt: skip
        self.tokens_per_step = cfg.batch_size * model_cfg.context * cfg.grad_accum
        self.autocast = torch.autocast(self.device.type, self.placement.dtype,
                                       enabled=self.placement.autocast)  # fmt: skip
        self.metrics: rundir.MetricsLog | None = None  # opened by start(), after any resume
        self.tuner: ThreadTuner | None = None
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.lr = 0.0
        self.window_start, self.window_tokens = 0.0, 0

    # -- the parts of a step -------------------------------------------------------------------

    def micro_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        sync: bool,
        length: int | None = None,
        eager: bool = False,
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch, its windows cut into rows of `length`
        (default: --seq-warmup's length at this point of the budget); `eager` runs the model
        itself, not its compiled or DDP-wrapped form."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if length is None:
            length = seq_len(self.cfg, x.size(1), self.state.step, self.state.train_seconds)
        x, y = x.reshape(-1, length), y.reshape(-1, length)  # (B * T / length, length) each
        forward = self.model if eager else self.forward
        with self.dist.no_sync(forward, sync), self.autocast:
            _, loss = forward(x, y)
        self.scaler.scale(loss / self.accum).backward()
        return loss.detach()

    def step(self) -> None:
        """One optimiser step over grad_accum micro-batches; the clock counts only this."""
        state, cfg = self.state, self.cfg
        t0 = time.perf_counter()
        self.lr = learning_rate(cfg, state.step, state.train_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_scale"]
        for micro in range(self.accum):
            batch = self.batches.get(state.step, micro)
            self.loss_sum += self.micro_step(*batch, sync=micro == self.accum - 1)
            self.loss_count += 1
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        # foreach: one kernel per op for all gradients (the default loops per tensor on CPU).
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += self.tokens_per_step
        self.window_tokens += self.tokens_per_step
        if self.log_due() and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the clock sees the real step time
        elapsed = time.perf_counter() - t0
        if self.dist.active:
            self.unagreed_seconds += elapsed  # the clock moves at the next agree, on every rank
        else:
            state.train_seconds += elapsed

    def agree(self, stop: bool) -> bool:
        """Whether to stop, agreed by every rank; under DDP the clock moves here, to the slowest
        rank's, so that every time-driven decision (budget, schedule, timed evaluations, logs)
        is the same on every rank."""
        if not self.dist.active:
            return stop
        seconds = self.state.train_seconds + self.unagreed_seconds
        stop, self.state.train_seconds = self.dist.agree(stop, seconds)
        self.unagreed_seconds = 0.0
        return stop

    def budget_left(self) -> bool:
        state, cfg = self.state, self.cfg
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            return False
        return cfg.max_time is None or state.train_seconds < cfg.max_time

    def log_due(self) -> bool:
        return self.state.step % self.cfg.log_every == 0 or not self.budget_left()

    def eval_due(self) -> bool:
        state, cfg = self.state, self.cfg
        interval = cfg.eval_interval
        timed = interval is not None and state.train_seconds - state.last_eval_seconds >= interval
        return (state.step % cfg.eval_every == 0 or timed) and self.budget_left()

    def log(self) -> None:
        state, cfg = self.state, self.cfg
        loss = self.dist.mean(self.loss_sum).item() / max(self.loss_count, 1)
        if not math.isfinite(loss):
            raise _diverged(state.step, self.run_dir)
        rate = self.window_tokens / max(state.train_seconds - self.window_start, 1e-9)
        done = progress(cfg, state.step, state.train_seconds)
        eta = None
        if cfg.max_steps is not None or cfg.max_time is not None:
            eta = (1 - done) * state.train_seconds / max(done, 1e-9)
        if self.metrics is not None:
            self.metrics.train(state.step, state.train_seconds, state.tokens, loss=loss,
                               lr=self.lr, tokens_per_s=rate)  # fmt: skip
        self.on_event(Logged(state.step, loss, self.lr, rate, done, state.train_seconds, eta))
        if self.tuner is not None:
            # If something else took the cores, steps slow down: measure again.
            t_tune = time.perf_counter()
            if self.tuner.observe(self.tokens_per_step / rate, state.train_seconds):
                state.train_seconds += time.perf_counter() - t_tune
                if self.compiled:  # kernels for the new thread count, compiled off the clock
                    self._compile()
        self.loss_sum.zero_()
        self.loss_count = 0
        self.window_start, self.window_tokens = state.train_seconds, 0

    def evaluate(self) -> Evaluation:
        """The whole validation split; saves the training state, and the weights as
        best.safetensors when the loss improved."""
        state, model_cfg = self.state, self.model_cfg
        state.last_eval_seconds = state.train_seconds
        result = evaluate(self.model, self.val_tokens, model_cfg.context, self.bytes_per_token,
                          self.device, self.placement.dtype)  # fmt: skip
        if not math.isfinite(result.loss):
            raise _diverged(state.step, self.run_dir)
        state.last_val_loss, state.evaluated_step = result.loss, state.step
        improved = result.loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_val_bpb = result.loss, result.bits_per_byte
        self.save_state()
        if improved:
            self.save_weights(rundir.BEST)
        if self.metrics is not None:
            self.metrics.eval(state.step, state.train_seconds, state.tokens, val_loss=result.loss,
                              val_bpb=result.bits_per_byte, val_ppl=result.perplexity)  # fmt: skip
        self.on_event(Evaluated(state.step, result, improved, state.train_seconds))
        self.evaluations += 1
        every = self.cfg.sample_every
        if every is not None and self.evaluations % every == 0 and self.dist.is_main:
            self.on_event(Sampled(state.step, self.sample()))
        return result

    def sample(self) -> str:
        """SAMPLE_TOKENS tokens after a newline (or the validation split's first token, for a
        vocabulary without one), with the run's seed: between two samples only the model
        changed. Not counted as training time; torch's RNG is not touched."""
        from lmcli.sampling.engines.torch_engine import TorchEngine
        from lmcli.sampling.generate import generate
        from lmcli.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(self.token_dir)
        try:
            prompt = [int(i) for i in tokenizer.encode("\n")]
        except InputError:
            prompt = [int(self.val_tokens[0])]
        cfg = SampleConfig(max_new_tokens=SAMPLE_TOKENS, seed=self.cfg.seed)
        try:
            steps = list(generate(TorchEngine(self.model), prompt, cfg))
        finally:
            self.model.train()
        ids = np.stack(steps, axis=1)[0].tolist()  # (N,)
        return tokenizer.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- checkpoints ---------------------------------------------------------------------------

    def save_state(self) -> None:
        """last.pt: all that --resume needs (weights, optimizer, scaler, RNG, where it is), and
        the same weights as last.safetensors for sampling. Each file is written atomically."""
        if not self.dist.is_main:
            return
        state = self.state
        saved: dict[str, Any] = {
            "model_config": json.dumps(self.model_cfg.__dict__),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "step": state.step,
            "tokens": state.tokens,
            "train_seconds": state.train_seconds,
            "best_val_loss": state.best_val_loss,
            "best_val_bpb": state.best_val_bpb,
            "evaluated_step": state.evaluated_step,
            "last_val_loss": state.last_val_loss,
        }
        if self.device.type == "cuda":
            saved["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(self.run_dir / rundir.STATE, saved)
        self.save_weights(rundir.LAST_WEIGHTS)

    def save_weights(self, name: str) -> None:
        if self.dist.is_main:
            loss = _finite(self.state.last_val_loss)
            save_weights(self.run_dir / name, self.model.state_dict(), self.model_cfg,
                         step=self.state.step, val_loss=loss)  # fmt: skip

    def resume(self) -> None:
        """Continue from last.pt; with none yet (a run killed before its first save), from the
        start."""
        path = self.run_dir / rundir.STATE
        if not path.exists():
            if self.dist.is_main:
                rundir.truncate_metrics(self.run_dir, 0)  # what the killed attempt logged
            return
        saved = load_checkpoint(path, map_location=self.device)
        missing = [k for k, kind in TRAINING_STATE.items() if not isinstance(saved.get(k), kind)]
        if missing:
            raise InputError(
                f"{path} holds no training state ({', '.join(missing)} missing): it is not a "
                "checkpoint --resume can continue from",
                hint="lmcli train writes last.pt with the optimizer and step; a weights file "
                "holds weights only",
            )
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["rng_cpu"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise InputError(f"{path} does not fit the run's config ({first})") from None
        if self.device.type == "cuda" and "rng_cuda" in saved:
            torch.cuda.set_rng_state(saved["rng_cuda"])
        state = self.state
        state.step, state.tokens = saved["step"], saved["tokens"]
        state.train_seconds = state.last_eval_seconds = saved["train_seconds"]
        state.best_val_loss, state.best_val_bpb = saved["best_val_loss"], saved["best_val_bpb"]
        evaluated, last_loss = saved.get("evaluated_step"), saved.get("last_val_loss")
        if isinstance(evaluated, int) and isinstance(last_loss, float):  # else: lmcli 0.1's
            state.evaluated_step, state.last_val_loss = evaluated, last_loss
        if self.dist.is_main:
            rundir.truncate_metrics(self.run_dir, state.step)

    # -- start and end -------------------------------------------------------------------------

    def start(self) -> None:
        """Choose the thread count, time a step, and report what the run is."""
        if self.dist.is_main:
            self.metrics = rundir.MetricsLog(self.run_dir)
        notes = self.notes
        if self.threads is None and self.device.type == "cpu":
            # Timed eagerly: a compiled model would compile again for each thread count.
            self.tuner = ThreadTuner(lambda: self._time_step(eager=True))
            self.threads = self.tuner.tune()
            tried = ", ".join(f"{n}: {t * 1000:.0f} ms" for n, t in self.tuner.timings.items())
            notes.append(
                f"threads: a step took {tried}; using {self.threads} (--threads to fix it)"
            )
        step_seconds = self._time_step(eager=True)
        if not self.compiled and self._compile_pays(step_seconds):
            self.compiled, self.forward = True, self.dist.wrap(self._compiled_model())
        if self.compiled:
            notes.append(self._compile())
            step_seconds = self._time_step()
        self.window_start = self.state.train_seconds
        self.on_event(
            Started(
                params=self.model.num_params(),
                device=str(self.device),
                dtype=str(self.placement.dtype).removeprefix("torch."),
                threads=self.threads or torch.get_num_threads(),
                compiled=self.compiled,
                world_size=self.dist.world_size,
                tokens_per_step=self.tokens_per_step,
                memory_estimate_bytes=self.memory_estimate,
                step_seconds_estimate=step_seconds,
                start_step=self.state.step,
                notes=tuple(notes),
            )
        )
        self.model.train()

    def _compiled_model(self) -> nn.Module:
        # Static shapes: one graph for each of the few lengths a run trains on (--seq-warmup's
        # stages), not a dynamic-shape graph whose kernels cannot specialise on them.
        return cast(nn.Module, torch.compile(self.model, dynamic=False))

    def _compile_pays(self, step_seconds: float) -> bool:
        """--compile auto on a CPU: compile a transformer when the run is expected to train
        for at least COMPILE_PAYS_SECONDS (by its time budget, or its step budget at
        `step_seconds`, the eager step's time). Not an LSTM or GRU: its step is already one
        fused kernel a layer, and compiled it ran no faster (README)."""
        if self.cfg.compile is not None or self.device.type != "cpu" or self.dist.active:
            return False
        if self.model_cfg.model != "transformer":
            return False
        return expected_train_seconds(self.cfg, self.state, step_seconds) >= COMPILE_PAYS_SECONDS

    def _compile(self) -> str:
        """Compile the forward and backward for every sequence length the run will train on
        (--seq-warmup's and the context), before the clock starts: compiling is not training,
        as evaluating is not. Returns the note that says what it cost. On a CPU that cannot
        compile (no C++ compiler, say), --compile auto goes on eagerly; --compile refuses."""
        t0 = time.perf_counter()
        lengths = training_lengths(self.cfg, self.model_cfg.context)
        try:
            for length in lengths:
                self._time_step(length)  # the first call at each length compiles
        except Exception as exc:  # torch.compile fails in many ways, none of them the user's
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if self.cfg.compile is True or self.device.type != "cpu":
                raise LmcliError(
                    f"torch.compile failed on {self.device}: {first}",
                    hint="train without --compile (on a CPU it needs a C++ compiler)",
                ) from None
            torch._dynamo.reset()
            self.compiled, self.forward = False, self.dist.wrap(self.model)
            return f"compile: torch.compile failed ({first}); training without it"
        seconds = time.perf_counter() - t0
        self.compile_seconds += seconds
        shown = ", ".join(str(n) for n in lengths)
        return (
            f"compile: {seconds:.0f} s for sequence length {shown}, not counted "
            "as training (torch caches it: the next run of this model compiles in seconds)"
        )

    def _time_step(self, length: int | None = None, eager: bool = False) -> float:
        """Seconds for one forward + backward of a real batch, without changing anything: it
        warms up kernels and then restores the RNG and drops the gradients."""
        rng = torch.get_rng_state()
        t0 = time.perf_counter()
        self.micro_step(*self.batches.get(0, 0), False, length, eager)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = (time.perf_counter() - t0) * self.accum
        self.model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
        return seconds

    def result(self, interrupted: bool) -> TrainResult:
        state = self.state
        return TrainResult(
            run_dir=self.run_dir,
            params=self.model.num_params(),
            steps=state.step,
            tokens_seen=state.tokens,
            train_seconds=state.train_seconds,
            wall_seconds=time.perf_counter() - self.wall_start,
            compile_seconds=self.compile_seconds,
            tokens_per_s=state.tokens / max(state.train_seconds, 1e-9),
            best_val_loss=state.best_val_loss,
            best_val_bpb=state.best_val_bpb,
            last_val_loss=state.last_val_loss,
            checkpoint=self.run_dir / rundir.BEST,
            interrupted=interrupted,
        )

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.dist.teardown()


def expected_train_seconds(cfg: TrainConfig, state: RunState, step_seconds: float) -> float:
    """How long the rest of the run will train: its time budget, or its step budget at
    `step_seconds` a step, whichever ends first; without either, until Ctrl-C (infinity)."""
    left = [math.inf]
    if cfg.max_time is not None:
        left.append(cfg.max_time - state.train_seconds)
    if cfg.max_steps is not None:
        left.append((cfg.max_steps - state.step) * step_seconds)
    return min(left)


def training_lengths(cfg: TrainConfig, context: int) -> list[int]:
    """Every sequence length the run trains on: --seq-warmup's stages and the context."""
    lengths = {context}
    if cfg.seq_warmup is not None:
        lengths |= {min(length, context) for length, _ in parse_seq_warmup(cfg.seq_warmup)}
    return sorted(lengths)


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


def check_training_memory(
    model_cfg: ModelConfig, cfg: TrainConfig, placement: Placement, processes: int = 1
) -> int:
    """The bytes a training step will hold (parameters, gradients, optimizer state, activations,
    the model's tables), refused before anything is allocated if the machine lacks them. The
    model is sized from its config alone (lmcli.weights)."""
    step = estimate_step_memory(model_cfg, cfg, parameter_count(model_cfg), placement.autocast)
    need = step.total + table_bytes(model_cfg)
    hint = "use a smaller --batch-size (with --grad-accum to keep the batch), --context or model"
    if placement.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(placement.device)
        check_memory(need, "this training run", hint, available=free)
    else:
        check_memory(need * processes, "this training run", hint)
    return need


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _diverged(step: int, run_dir: Path) -> TrainingDiverged:
    last = run_dir / rundir.STATE
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was saved"
    return TrainingDiverged(
        f"the loss became NaN or infinite at step {step}; {kept}",
        hint="lower --lr, raise --warmup, or use --dtype float32",
    )
