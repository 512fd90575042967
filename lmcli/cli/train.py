"""`lmcli train`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, cast

import typer

from lmcli.cli.render import TrainProgress, note, print_json, print_kv, print_table, user_errors
from lmcli.config import ModelConfig, TokenizeConfig, TrainConfig, parse_duration
from lmcli.corpus.prepare import tokenize_corpus
from lmcli.corpus.tokenfiles import META_FILE, TokenMeta
from lmcli.devices import resolve_device
from lmcli.errors import InputError, LmcliError
from lmcli.presets import PRESETS, as_record, build_configs, load_config_file, resolve
from lmcli.training import distributed, rundir
from lmcli.training.loop import TrainResult, check_data_fits
from lmcli.training.loop import train as run_training

EXIT_INTERRUPTED = 130
_PANEL_MODEL = "Model"
_PANEL_TRAIN = "Training"


def _opt(help: str, panel: str = _PANEL_MODEL, **kw: Any) -> Any:
    return typer.Option(help=help, rich_help_panel=panel, show_default=False, **kw)


def train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="A token directory (from lmcli tokenize), a text file, or a named corpus."
        ),
    ] = "shakespeare",
    preset: Annotated[
        str | None, _opt(f"Start from a preset: {', '.join(PRESETS)}. \\[default: quick]")
    ] = None,
    config: Annotated[
        Path | None, _opt("A TOML or JSON file of settings, keys spelled as these flags.")
    ] = None,
    model: Annotated[str | None, _opt("transformer, lstm or gru.")] = None,
    layers: Annotated[int | None, _opt("Number of layers.")] = None,
    width: Annotated[int | None, _opt("Residual width (transformer) or hidden size (RNN).")] = None,
    heads: Annotated[int | None, _opt("Attention (query) heads.")] = None,
    kv_heads: Annotated[
        int | None,
        _opt("Key/value heads: = heads is multi-head, 1 multi-query, a divisor grouped-query."),
    ] = None,
    context: Annotated[int | None, _opt("Context length in tokens.")] = None,
    pos: Annotated[str | None, _opt("Positions: learned, sinusoidal, rope or none.")] = None,
    norm: Annotated[str | None, _opt("layernorm or rmsnorm.")] = None,
    norm_placement: Annotated[str | None, _opt("pre (GPT-2 onwards) or post (2017).")] = None,
    mlp: Annotated[str | None, _opt("MLP activation: gelu, swiglu or relu2.")] = None,
    window: Annotated[
        int | None, _opt("Sliding-window width for local layers (none: all global).")
    ] = None,
    window_pattern: Annotated[
        str | None, _opt("Layer pattern, repeated: S local, L global (SL alternates).")
    ] = None,
    dropout: Annotated[float | None, _opt("Dropout probability.")] = None,
    tie: Annotated[bool | None, _opt("Tie the LM head to the token embedding.")] = None,
    bias: Annotated[bool | None, _opt("Biases in linear layers and LayerNorm.")] = None,
    embedding: Annotated[int | None, _opt("LSTM/GRU embedding size (default: width).")] = None,
    batch_size: Annotated[int | None, _opt("Sequences per micro-batch.", _PANEL_TRAIN)] = None,
    grad_accum: Annotated[
        int | None, _opt("Micro-batches per optimizer step.", _PANEL_TRAIN)
    ] = None,
    lr: Annotated[float | None, _opt("Peak learning rate.", _PANEL_TRAIN)] = None,
    warmup: Annotated[int | None, _opt("Linear warmup steps.", _PANEL_TRAIN)] = None,
    min_lr_ratio: Annotated[
        float | None, _opt("Cosine decays to lr times this.", _PANEL_TRAIN)
    ] = None,
    weight_decay: Annotated[
        float | None, _opt("Decoupled weight decay of the weight matrices.", _PANEL_TRAIN)
    ] = None,
    optimizer: Annotated[
        str | None,
        _opt(
            "adamw, or muon: Muon for the hidden matrices, AdamW at --lr for the rest.",
            _PANEL_TRAIN,
        ),
    ] = None,
    muon_lr: Annotated[
        float | None, _opt("Peak learning rate of the Muon matrices.", _PANEL_TRAIN)
    ] = None,
    max_steps: Annotated[int | None, _opt("Stop after this many steps.", _PANEL_TRAIN)] = None,
    max_time: Annotated[
        str | None,
        _opt("Stop after this much training time (90s, 3m, 1h30m; eval excluded).", _PANEL_TRAIN),
    ] = None,
    eval_every: Annotated[
        int | None, _opt("Evaluate on the whole val split every N steps.", _PANEL_TRAIN)
    ] = None,
    eval_interval: Annotated[
        str | None,
        _opt(
            "Also evaluate every this much training time (30s, 2m): curves of timed runs.",
            _PANEL_TRAIN,
        ),
    ] = None,
    log_every: Annotated[int | None, _opt("Log every N steps.", _PANEL_TRAIN)] = None,
    device: Annotated[str | None, _opt("auto, cpu, cuda, cuda:N or mps.", _PANEL_TRAIN)] = None,
    dtype: Annotated[
        str | None, _opt("auto, float32, bfloat16 or float16 (autocast).", _PANEL_TRAIN)
    ] = None,
    compile: Annotated[
        bool | None, _opt("torch.compile the model (default: on for CUDA).", _PANEL_TRAIN)
    ] = None,
    threads: Annotated[
        int | None,
        _opt(
            "CPU threads (default: 1 or one per core, whichever a timed step says).", _PANEL_TRAIN
        ),
    ] = None,
    seed: Annotated[int | None, _opt("Random seed.", _PANEL_TRAIN)] = None,
    tokenizer: Annotated[
        str, _opt("For a text corpus: char, bpe or a tiktoken name.", "Data")
    ] = "char",
    vocab_size: Annotated[int | None, _opt("For --tokenizer bpe: vocabulary size.", "Data")] = None,
    out: Annotated[
        Path | None, _opt("Run directory. \\[default: runs/CORPUS-MODEL-TIME]", "Output")
    ] = None,
    resume: Annotated[
        Path | None, _opt("Continue the run in this directory from its last checkpoint.", "Output")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress or log lines.")] = False,
) -> None:
    """Train a transformer or an LSTM/GRU; leaves a run directory for `lmcli sample`."""
    flags = {
        "preset": preset, "model": model, "layers": layers, "width": width, "heads": heads,
        "kv-heads": kv_heads, "context": context, "pos": pos, "norm": norm,
        "norm-placement": norm_placement, "mlp": mlp, "window": window,
        "window-pattern": window_pattern, "dropout": dropout, "tie": tie, "bias": bias,
        "embedding": embedding, "batch-size": batch_size, "grad-accum": grad_accum, "lr": lr,
        "warmup": warmup, "min-lr-ratio": min_lr_ratio, "weight-decay": weight_decay,
        "optimizer": optimizer, "muon-lr": muon_lr, "max-steps": max_steps,
        "eval-every": eval_every, "log-every": log_every,
        "device": device, "dtype": dtype, "compile": compile, "threads": threads, "seed": seed,
    }  # fmt: skip
    with user_errors():
        if max_time is not None:
            flags["max-time"] = parse_duration(max_time)
        if eval_interval is not None:
            flags["eval-interval"] = parse_duration(eval_interval, "--eval-interval")
        # Under torchrun, rank 0 alone tokenizes, creates the run directory and prints.
        dist = distributed.setup(resolve_device(str(flags.get("device") or "auto")))
        quiet = quiet or not dist.is_main
        setup: tuple[ModelConfig, TrainConfig, Path, Path] | str = "not set up"
        if dist.is_main:
            try:
                if resume is not None:
                    setup = _resume(resume, flags, config)
                else:
                    setup = _new_run(
                        corpus, flags, config, tokenizer, vocab_size, out, quiet or json_out
                    )
            except LmcliError as exc:
                dist.share(exc.message)
                raise
        setup = cast(tuple[ModelConfig, TrainConfig, Path, Path] | str, dist.share(setup))
        if isinstance(setup, str):
            raise typer.Exit(1)  # rank 0 reported the error
        model_cfg, train_cfg, token_dir, run_dir = setup
        if not (quiet or json_out):
            print_kv("config", as_record(model_cfg, train_cfg))
        with ctrl_c() as stop, TrainProgress(quiet) as progress:
            result = run_training(
                model_cfg, train_cfg, token_dir, run_dir, resume is not None, progress, stop
            )
    if dist.is_main:
        if json_out:
            print_json(result.to_dict())
        else:
            print_table("lmcli train", _rows(result))
    if result.interrupted:
        if dist.is_main:
            note(
                f"interrupted at step {result.steps}; continue with: lmcli train --resume {run_dir}"
            )
        raise typer.Exit(EXIT_INTERRUPTED)


def _new_run(
    corpus: str,
    flags: dict[str, Any],
    config: Path | None,
    tokenizer: str,
    vocab_size: int | None,
    out: Path | None,
    quiet: bool,
) -> tuple[ModelConfig, TrainConfig, Path, Path]:
    resolve(flags, config)  # refuse a bad config before any tokenizing
    source = Path(corpus)
    is_token_dir = (source / META_FILE).is_file()
    name = source.name if is_token_dir else (source.stem or corpus)
    model_name = flags.get("model") or flags.get("preset") or "quick"
    run_dir = out if out is not None else rundir.default_run_dir(f"{name}-{model_name}")
    if (run_dir / rundir.CONFIG_FILE).exists():
        raise InputError(
            f"{run_dir} already holds a run",
            hint=f"continue it with --resume {run_dir}, or choose another --out",
        )
    if is_token_dir:
        token_dir = source
    else:
        if not quiet:
            note(f"tokenizing {corpus} ({tokenizer}) into {run_dir / 'data'}")
        cfg = TokenizeConfig(
            corpus=corpus,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            out=run_dir / "data",
            force=True,
        )
        token_dir = tokenize_corpus(cfg).out_dir
    meta = TokenMeta.load(token_dir)
    model_cfg, train_cfg, _ = resolve(flags, config, vocab_size=meta.vocab_size)
    check_data_fits(meta, model_cfg)
    record = {**as_record(model_cfg, train_cfg), "preset": flags.get("preset")}
    rundir.create(run_dir, token_dir, record)
    return model_cfg, train_cfg, token_dir, run_dir


def _resume(
    run_dir: Path, flags: dict[str, Any], config: Path | None
) -> tuple[ModelConfig, TrainConfig, Path, Path]:
    saved = rundir.load_config(run_dir)
    record = saved["config"]
    given = {k: v for k, v in flags.items() if v is not None and k != "preset"}
    if config is not None:
        given = {**load_config_file(config), **given}
    new = {**record, **given}
    rundir.check_resumable(record, new)
    model_cfg, train_cfg = build_configs(new, vocab_size=int(record["vocab-size"]))
    return model_cfg, train_cfg, Path(saved["data"]), run_dir


@contextmanager
def ctrl_c() -> Iterator[Any]:
    """First Ctrl-C: finish the step, save, exit 130. A second one: stop at once."""
    requested = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True
        note("stopping after this step and saving (Ctrl-C again to stop at once)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner thread)
        yield lambda: False
        return
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def _rows(r: TrainResult) -> list[tuple[str, str]]:
    return [
        ("parameters", f"{r.params:,}"),
        ("steps", f"{r.steps:,}"),
        ("tokens seen", f"{r.tokens_seen:,}"),
        ("training time", f"{r.train_seconds:.1f} s"),
        ("wall time", f"{r.wall_seconds:.1f} s"),
        ("tokens/s", f"{r.tokens_per_s:,.0f}"),
        ("best val loss", f"{r.best_val_loss:.4f}"),
        ("best val bits/byte", f"{r.best_val_bpb:.4f}"),
        ("last val loss", f"{r.last_val_loss:.4f}"),
        ("checkpoint", str(r.checkpoint)),
    ]
