"""`lmcli compare-rnn`: a transformer and recurrent baselines, trained under one budget.

Every model trains through `lmcli.training.loop.train` on the same token files, context, batch,
optimiser settings, seed and budget (the transformer's preset sets them), each in its own run
directory under the comparison's folder, so `lmcli sample` and `lmcli train --resume` work on
them too. With --match params a recurrent model's width is the one whose parameter count is
nearest the transformer's (within 10 %, or an error). After training, each best checkpoint is
measured the same way: validation loss by position in the window (what longer context buys),
generation speed and a sample through `lmcli.sampling` with one prompt and seed, and the
memory one training step holds, counted tensor by tensor (lmcli/training/memory.py).

Running the same comparison again reuses every finished run and resumes an interrupted one from
its last checkpoint; the measurements after training are taken afresh (seconds).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcli import rundir
from lmcli.config import CompareConfig, ModelConfig, SampleConfig, TokenizeConfig, TrainConfig
from lmcli.corpus.documents import locate_corpus, open_corpus
from lmcli.corpus.prepare import tokenize_corpus
from lmcli.corpus.tokenfiles import META_FILE, TokenMeta, open_tokens
from lmcli.devices import PeakMemory, describe_machine, resolve_placement
from lmcli.errors import InputError
from lmcli.files import make_dir, read_json_file, write_json
from lmcli.models import build_model
from lmcli.presets import as_record, build_configs, resolve
from lmcli.training.evaluate import loss_by_position
from lmcli.training.loop import Event, TrainResult, check_data_fits, train
from lmcli.training.memory import first_batch_memory

SETTINGS_FILE = "settings.json"
RESULT_FILE = "result.json"  # in a model's run directory once its training finished
MATCH_TOLERANCE = 0.10
TIME_MATCH_RNN_WIDTH = 128  # char-rnn's default size, with --rnn-layers 2


@dataclass(frozen=True)
class Stage:
    """What the comparison is doing now, for the CLI to show."""

    model: str
    message: str


@dataclass
class ModelResult:
    name: str
    params: int
    config: dict[str, Any]  # the run's config.json record
    train: dict[str, Any]  # TrainResult.to_dict(): steps, tokens/s, best val loss and bpb, ...
    # Bytes one training step holds (training.memory): parameters, gradients, optimizer,
    # activations, total; and on CUDA the allocator's peak over the whole training run.
    memory: dict[str, int | None]
    curve: list[dict[str, float]]  # each evaluation: step, train_seconds, tokens, val_bpb
    bpb_by_position: list[float]  # mean val bits per byte at positions 1..T of the window
    generation_tokens_per_s: float
    sample: str
    reused: bool


@dataclass
class Comparison:
    out: Path
    settings: dict[str, Any]
    machine: dict[str, Any]
    context: int
    models: list[ModelResult] = field(default_factory=list)
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out"] = str(self.out)
        return out


def settings_record(cfg: CompareConfig) -> dict[str, Any]:
    """What must be equal for a second run to reuse the first one's training."""
    keep = ("corpus", "models", "budget", "steps", "match", "preset", "rnn_layers",
            "eval_points", "seed")  # fmt: skip
    record = {k: getattr(cfg, k) for k in keep}
    record["models"] = list(cfg.models)
    return record


def compare(
    cfg: CompareConfig,
    on_event: Callable[[Event | Stage], None] = lambda e: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Comparison:
    cfg.validate()
    flags = train_flags(cfg)
    _, first_train, _ = resolve(flags, None)  # a bad preset or setting fails here, before any work
    device = resolve_placement(cfg.device, first_train.dtype).device
    if not (Path(cfg.corpus) / META_FILE).is_file():
        locate_corpus(cfg.corpus)  # a corpus that cannot be read fails here, before any work
    settings = settings_record(cfg)
    with comparison_folder(cfg.out, settings):
        token_dir = _tokens(cfg, on_event)
        meta = TokenMeta.load(token_dir)
        configs = model_configs(cfg, flags, meta.vocab_size)
        for model_cfg, _ in configs.values():
            check_data_fits(meta, model_cfg)
        _check_prompt(token_dir, cfg.prompt)
        write_json(cfg.out / SETTINGS_FILE, settings)
        context = next(iter(configs.values()))[0].context  # the preset's, shared by every model
        comparison = Comparison(cfg.out, settings, describe_machine(device), context)
        for name, (model_cfg, train_cfg) in configs.items():
            run_dir = cfg.out / name
            outcome = _train_or_reuse(name, model_cfg, train_cfg, token_dir, run_dir, on_event,
                                      should_stop, device)  # fmt: skip
            if outcome is None:
                comparison.interrupted = True
                return comparison
            result, memory, reused = outcome
            on_event(Stage(name, "measuring loss by position, generation speed and a sample"))
            comparison.models.append(
                _measure(name, cfg, run_dir, token_dir, meta, result, memory, reused)
            )
    return comparison


@contextmanager
def comparison_folder(out: Path, settings: dict[str, Any]) -> Iterator[Path]:
    """The comparison's folder, locked: new or empty (and removed again if the comparison fails
    before it began), or one holding this same comparison. Never a folder of anything else."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory", hint="choose another --out")
    began = (out / SETTINGS_FILE).exists()
    if began:
        _check_settings(out, settings)
    elif out.is_dir():
        if (out / rundir.CONFIG_FILE).exists():
            raise InputError(
                f"--out {out} holds a training run, not a comparison",
                hint="give compare-rnn a folder of its own (a new or empty --out)",
            )
        rundir.check_new_run_dir(out)
    created = make_dir(out, "the comparison folder")
    try:
        with rundir.RunLock(out):
            if began:
                _check_settings(out, settings)  # again, now that no other writer is busy here
            yield out
    except BaseException:
        if not (out / SETTINGS_FILE).exists():  # it never began: leave nothing of it behind
            shutil.rmtree(out / "data", ignore_errors=True)
            (out / rundir.LOCK_FILE).unlink(missing_ok=True)
            if created:
                with suppress(OSError):
                    out.rmdir()  # only if nothing else is in it
        raise


def train_flags(cfg: CompareConfig) -> dict[str, Any]:
    flags: dict[str, Any] = {"preset": cfg.preset, "seed": cfg.seed, "device": cfg.device,
                             "threads": cfg.threads}  # fmt: skip
    if cfg.budget is not None:
        flags.update({"max-time": cfg.budget, "max-steps": None, "eval-every": 10**9,
                      "eval-interval": cfg.budget / cfg.eval_points})  # fmt: skip
    else:
        assert cfg.steps is not None
        flags.update({"max-steps": cfg.steps, "max-time": None,
                      "eval-every": max(1, cfg.steps // cfg.eval_points)})  # fmt: skip
    return flags


def model_configs(
    cfg: CompareConfig, flags: dict[str, Any], vocab_size: int
) -> dict[str, tuple[ModelConfig, TrainConfig]]:
    """Each model's configs: the transformer's from the preset; a recurrent model's the same
    training settings with --rnn-layers and a width matched to the transformer (or 128)."""
    base, train_cfg, _ = resolve({**flags, "model": "transformer"}, None, vocab_size=vocab_size)
    target = build_model_params(base)
    configs: dict[str, tuple[ModelConfig, TrainConfig]] = {}
    for name in cfg.models:
        if name == "transformer":
            configs[name] = (base, train_cfg)
            continue
        rnn = {**flags, "model": name, "layers": cfg.rnn_layers}
        if cfg.match == "params":
            width = matched_width(rnn, vocab_size, target)
        else:
            width = TIME_MATCH_RNN_WIDTH
        model_cfg, rnn_train, _ = resolve({**rnn, "width": width}, None, vocab_size=vocab_size)
        configs[name] = (model_cfg, rnn_train)
    return configs


def build_model_params(model_cfg: ModelConfig) -> int:
    """The parameter count, from a model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return build_model(model_cfg).num_params()


def matched_width(flags: dict[str, Any], vocab_size: int, target: int) -> int:
    """The width (a multiple of 8) whose model's parameter count is nearest `target`."""

    def params(width: int) -> int:
        model_cfg, _, _ = resolve({**flags, "width": width}, None, vocab_size=vocab_size)
        return build_model_params(model_cfg)

    low, high = 1, 1024  # in units of 8; the count grows with the width
    while low < high:
        mid = (low + high) // 2
        if params(8 * mid) < target:
            low = mid + 1
        else:
            high = mid
    width = min((8 * w for w in (low - 1, low) if w >= 1), key=lambda w: abs(params(w) - target))
    got = params(width)
    if abs(got - target) > MATCH_TOLERANCE * target:
        raise InputError(
            f"no {flags['model']} width within 10 % of the transformer's {target:,} parameters "
            f"(nearest: width {width}, {got:,})",
            hint="change --rnn-layers or the --preset, or use --match time",
        )
    return width


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    saved = read_json_file(out / SETTINGS_FILE)
    differing = [f"{k} {saved.get(k)!r} → {v!r}" for k, v in settings.items() if saved.get(k) != v]
    if differing:
        raise InputError(
            f"{out} holds a comparison with other settings: " + "; ".join(differing),
            hint="use another --out, or delete that folder to start over",
        )


def _tokens(cfg: CompareConfig, on_event: Callable[[Event | Stage], None]) -> Path:
    source = Path(cfg.corpus)
    if (source / META_FILE).is_file():
        return source
    out = cfg.out / "data"
    if (out / META_FILE).is_file():  # tokenized by an earlier run of the same comparison
        if TokenMeta.load(out).corpus.get("sha256") != open_corpus(cfg.corpus).sha256:
            raise InputError(
                f"{cfg.corpus} changed since the comparison in {cfg.out} began (its sha256 is "
                f"not the one in {out / META_FILE})",
                hint="use another --out for the new text, or delete that folder to start over",
            )
        return out
    on_event(Stage("data", f"tokenizing {cfg.corpus} (char) into {out}"))
    return tokenize_corpus(TokenizeConfig(corpus=cfg.corpus, out=out)).out_dir


def _check_prompt(token_dir: Path, prompt: str) -> None:
    from lmcli.sampling.prompt import encode_prompt
    from lmcli.tokenizers import load_tokenizer

    encode_prompt(load_tokenizer(token_dir), prompt, hint="change --prompt")


def _train_or_reuse(
    name: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    token_dir: Path,
    run_dir: Path,
    on_event: Callable[[Event | Stage], None],
    should_stop: Callable[[], bool],
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, Any], bool] | None:
    """(train result, memory, reused), or None when stopped (the run can be resumed)."""
    record = as_record(model_cfg, train_cfg)
    done = run_dir / RESULT_FILE
    began = (run_dir / rundir.CONFIG_FILE).is_file()
    if done.is_file() and began and rundir.load_config(run_dir).record == record:
        saved = read_json_file(done)
        if not isinstance(saved.get("train"), dict) or not isinstance(saved.get("memory"), dict):
            raise InputError(f"{done} is damaged", hint=f"delete it to train {name} again")
        on_event(Stage(name, f"reusing the finished run in {run_dir}"))
        return saved["train"], saved["memory"], True
    with ExitStack() as held:
        if began:  # interrupted (or killed) earlier: continue it
            held.enter_context(rundir.existing_run(run_dir))
            saved_config = rundir.load_config(run_dir)
            rundir.check_resumable(saved_config.record, record)
            rundir.check_data(run_dir, saved_config)
            on_event(Stage(name, f"resuming the run in {run_dir}"))
        else:
            held.enter_context(rundir.new_run(run_dir))
            rundir.create(run_dir, token_dir, record)
            on_event(Stage(name, f"training in {run_dir}"))
        with PeakMemory(device) as peak:
            result: TrainResult = train(model_cfg, train_cfg, token_dir, run_dir, began, on_event,
                                        should_stop)  # fmt: skip
        if result.interrupted:
            return None
        # A resumed run's peak covers its second part only, which reaches the same peak.
        memory: dict[str, Any] = {"cuda_peak": peak.bytes}
        outcome = {"train": result.to_dict(), "memory": memory}
        write_json(done, outcome)
    return outcome["train"], memory, False


def _measure(
    name: str,
    cfg: CompareConfig,
    run_dir: Path,
    token_dir: Path,
    meta: TokenMeta,
    result: dict[str, Any],
    memory: dict[str, Any],
    reused: bool,
) -> ModelResult:
    from lmcli.checkpoints import load_model
    from lmcli.sampling.generate import generate
    from lmcli.sampling.open import open_model
    from lmcli.sampling.prompt import encode_prompt

    record = rundir.load_config(run_dir).record
    model_cfg, train_cfg = build_configs(record, meta.vocab_size)
    placement = resolve_placement(train_cfg.device, train_cfg.dtype)
    model, _ = load_model(run_dir, placement.device)
    losses = loss_by_position(model, open_tokens(token_dir, "val"), model_cfg.context,
                              placement.device, torch.float32)  # fmt: skip
    bpb = losses / math.log(2) / meta.bytes_per_token("val")
    # Last: it takes an optimiser step on the loaded weights (the checkpoint is not written).
    step = first_batch_memory(model, train_cfg, model_cfg.context, token_dir,
                              placement.device, placement.dtype)  # fmt: skip

    engine = open_model(run_dir, device="cpu")  # the CPU engine `lmcli sample` uses
    sample_cfg = SampleConfig(prompt=cfg.prompt, max_new_tokens=cfg.sample_tokens, seed=cfg.seed)
    prompt = encode_prompt(engine.tokenizer, cfg.prompt, drop_unknown=False)
    start = time.perf_counter()
    tokens = np.stack(list(generate(engine.engine, prompt, sample_cfg)), axis=1)  # (1, N)
    seconds = time.perf_counter() - start
    text = engine.tokenizer.decode_bytes(tokens[0].tolist()).decode("utf-8", errors="replace")
    return ModelResult(
        name=name,
        params=int(result["params"]),
        config=record,
        train=result,
        memory={**asdict(step), "total": step.total, "cuda_peak": memory.get("cuda_peak")},
        curve=_curve(run_dir),
        bpb_by_position=[float(v) for v in bpb],
        generation_tokens_per_s=cfg.sample_tokens / seconds,
        sample=text,
        reused=reused,
    )


def _curve(run_dir: Path) -> list[dict[str, float]]:
    keys = ("step", "train_seconds", "tokens", "val_loss", "val_bpb")
    return [
        {k: float(row[k]) for k in keys}
        for row in rundir.read_metrics(run_dir)
        if row.get("kind") == "eval" and all(isinstance(row.get(k), int | float) for k in keys)
    ]
