"""`lmcli train`."""

from __future__ import annotations

import signal
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from lmcli import rundir
from lmcli.checkpoints import check_archive
from lmcli.cli.options import durations, option, with_settings
from lmcli.cli.render import (
    TrainProgress,
    exit_code,
    note,
    print_json,
    print_kv,
    print_table,
    user_errors,
)
from lmcli.cli.signals import graceful_stop, stop_at_once
from lmcli.cli.tokenize import skipped_note
from lmcli.config import (
    DEFAULT_BPE_VOCAB_SIZE,
    ModelConfig,
    TokenizeConfig,
    TrainConfig,
    parse_duration,
)
from lmcli.corpus.documents import locate_corpus
from lmcli.corpus.prepare import tokenize_corpus
from lmcli.corpus.tokenfiles import META_FILE, TokenMeta
from lmcli.devices import resolve_device, resolve_placement
from lmcli.errors import ConfigError, InputError, LmcliError
from lmcli.presets import DATA_KEYS, PRESETS, as_record, build_configs, load_config_file, resolve
from lmcli.training import distributed
from lmcli.training.loop import TrainResult, check_data_fits, check_training_memory
from lmcli.training.loop import train as run_training

DEFAULT_CORPUS = "shakespeare"
_PANEL_MODEL = "Model"
_PANEL_TRAIN = "Training"


@with_settings
def train(
    corpus: Annotated[
        str | None,
        typer.Argument(
            help="A token directory (from lmcli tokenize), a text file, a directory or quoted "
            "glob of text files, or a named corpus. \\[default: shakespeare, which ships with "
            "lmcli]",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        option(f"Start from a preset: {', '.join(PRESETS)}. \\[default: quick]", _PANEL_MODEL),
    ] = None,
    config: Annotated[
        Path | None,
        option("A TOML or JSON file of settings, keys spelled as these flags.", _PANEL_MODEL),
    ] = None,
    tokenizer: Annotated[
        str | None,
        option("For a text corpus: char, bpe or a tiktoken name. \\[default: char]", "Data"),
    ] = None,
    vocab_size: Annotated[
        int | None, option("For --tokenizer bpe: vocabulary size. \\[default: 4096]", "Data")
    ] = None,
    val_files: Annotated[
        int | None,
        option("For a directory or glob: hold out its last N files for validation.", "Data"),
    ] = None,
    doc_separator: Annotated[
        str | None,
        option(
            "For a directory or glob: auto, eot, blank-line or none (see lmcli tokenize "
            "--help). \\[default: auto]",
            "Data",
        ),
    ] = None,
    out: Annotated[
        Path | None, option("Run directory. \\[default: runs/CORPUS-MODEL-TIME]", "Output")
    ] = None,
    resume: Annotated[
        Path | None,
        option("Continue the run in this directory from its last checkpoint.", "Output"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress or log lines.")] = False,
    **settings: Any,
) -> None:
    """Train a transformer or an LSTM/GRU; leaves a run directory for `lmcli sample`. Every
    model and training setting below is also a config-file key of the same spelling."""
    flags: dict[str, Any] = {"preset": preset, "tokenizer": tokenizer, "vocab-size": vocab_size,
                             "val-files": val_files, "doc-separator": doc_separator}  # fmt: skip
    flags.update({name.replace("_", "-"): value for name, value in settings.items()})
    with user_errors(), ExitStack() as held:
        for key in durations():
            if flags.get(key) is not None:
                flags[key] = parse_duration(flags[key], f"--{key}")
        # Under torchrun, rank 0 alone prepares the run directory (and holds its lock) and prints.
        dist = distributed.setup(resolve_device(str(flags.get("device") or "auto")))
        quiet = quiet or not dist.is_main
        setup: Prepared | str = "not set up"
        if dist.is_main:
            try:
                with stop_at_once():  # a stop while preparing: nothing is left half-made
                    setup = _prepare(held, corpus, flags, config, resume, out, dist.world_size,
                                     quiet or json_out)  # fmt: skip
            except (LmcliError, KeyboardInterrupt) as exc:
                dist.share(getattr(exc, "message", "interrupted"))
                raise
        setup = cast(Prepared | str, dist.share(setup))
        if isinstance(setup, str):
            raise typer.Exit(1)  # rank 0 reported the error
        if not (quiet or json_out):
            print_kv("config", as_record(setup.model, setup.train))
        with graceful_stop(note) as stop, TrainProgress(quiet) as progress:
            result = run_training(setup.model, setup.train, setup.token_dir, setup.run_dir,
                                  setup.resume, progress, stop)  # fmt: skip
        if dist.is_main:
            if json_out:
                print_json(result.to_dict())
            else:
                print_table("lmcli train", _rows(result))
        if result.interrupted:
            if dist.is_main:
                note(f"stopped at step {result.steps}; continue with: "
                     f"lmcli train --resume {setup.run_dir}")  # fmt: skip
            raise typer.Exit(exit_code(stop.signum or signal.SIGINT))


@dataclass(frozen=True)
class Prepared:
    model: ModelConfig
    train: TrainConfig
    token_dir: Path
    run_dir: Path
    resume: bool


def _prepare(
    held: ExitStack,
    corpus: str | None,
    flags: dict[str, Any],
    config: Path | None,
    resume: Path | None,
    out: Path | None,
    processes: int,
    quiet: bool,
) -> Prepared:
    """Check everything, then take the run directory (locked until `held` closes) and make or
    reopen the run in it."""
    if resume is not None:
        _refuse_ignored(resume, corpus, flags, out)
        held.enter_context(rundir.existing_run(resume))
        return _resume(resume, flags, config, processes)
    return _new_run(held, corpus or DEFAULT_CORPUS, flags, config, out, processes, quiet)


def _refuse_ignored(
    run_dir: Path, corpus: str | None, flags: dict[str, Any], out: Path | None
) -> None:
    """--resume continues a run on its own data, model and folder: refuse what it would ignore."""
    given = [f"the corpus {corpus!r}"] if corpus is not None else []
    given += [f"--{k}" for k in (*DATA_KEYS, "preset") if flags.get(k) is not None]
    given += ["--out"] if out is not None else []
    if given:
        raise ConfigError(
            f"--resume {run_dir} continues that run on its own data and settings: "
            f"{', '.join(given)} would be ignored",
            hint="leave them out to resume, or start a new run without --resume",
        )


def _check_world(train_cfg: TrainConfig, processes: int) -> None:
    if train_cfg.grad_accum % processes != 0:
        raise ConfigError(
            f"--grad-accum {train_cfg.grad_accum} must be a multiple of the {processes} processes",
            hint="the global batch is batch_size * grad_accum, split over the processes",
        )


def _new_run(
    held: ExitStack,
    corpus: str,
    flags: dict[str, Any],
    config: Path | None,
    out: Path | None,
    processes: int,
    quiet: bool,
) -> Prepared:
    _, train_cfg, merged = resolve(flags, config)  # refuse a bad config before any work
    placement = resolve_placement(train_cfg.device, train_cfg.dtype)
    _check_world(train_cfg, processes)
    data = {key: merged.get(key) for key in DATA_KEYS}
    source = Path(corpus)
    is_token_dir = (source / META_FILE).is_file()
    # A corpus that cannot be read is refused before any folder is made.
    name = source.name if is_token_dir else locate_corpus(corpus).name
    model_name = flags.get("model") or merged.get("preset") or "quick"
    run_dir = out if out is not None else rundir.default_run_dir(f"{name}-{model_name}")
    if is_token_dir:  # everything can be checked before the run directory exists
        meta = TokenMeta.load(source)
        _check_same_tokenizer(source, meta, data)
        model_cfg, _, _ = resolve(flags, config, vocab_size=meta.vocab_size)
        check_data_fits(meta, model_cfg)
        check_training_memory(model_cfg, train_cfg, placement, processes)
    held.enter_context(rundir.new_run(run_dir))
    if is_token_dir:
        token_dir = source
    else:
        cfg = TokenizeConfig(corpus=corpus, tokenizer=data["tokenizer"] or "char",
                             vocab_size=data["vocab-size"], val_files=data["val-files"],
                             doc_separator=data["doc-separator"] or "auto",
                             out=run_dir / rundir.DATA_DIR)  # fmt: skip
        if not quiet:
            note(f"tokenizing {corpus} ({cfg.tokenizer}) into {cfg.out}")
        result = tokenize_corpus(cfg)
        if not quiet:
            skipped_note(result.skipped)
        token_dir = result.out_dir
    meta = TokenMeta.load(token_dir)
    model_cfg, train_cfg, merged = resolve(flags, config, vocab_size=meta.vocab_size)
    check_data_fits(meta, model_cfg)
    record = {**as_record(model_cfg, train_cfg), "preset": merged.get("preset")}
    rundir.create(run_dir, token_dir, record)
    return Prepared(model_cfg, train_cfg, token_dir, run_dir, resume=False)


def _check_same_tokenizer(token_dir: Path, meta: TokenMeta, data: dict[str, Any]) -> None:
    """A token directory is tokenized already: --tokenizer / --vocab-size may only repeat it,
    and how to split and separate a text corpus does not apply."""
    tokenizer, vocab_size = data["tokenizer"], data["vocab-size"]
    spec = tokenizer
    if tokenizer == "bpe":
        spec = f"bpe{vocab_size or DEFAULT_BPE_VOCAB_SIZE}"
    text_only = [f"--{k}" for k in ("val-files", "doc-separator") if data[k] is not None]
    if (
        (spec is not None and spec != meta.tokenizer)
        or (vocab_size is not None and vocab_size != meta.vocab_size)
        or text_only
    ):
        raise ConfigError(
            f"{token_dir} is tokenized already ({meta.tokenizer}, vocabulary "
            f"{meta.vocab_size:,}): --tokenizer, --vocab-size, --val-files and --doc-separator "
            "apply to a text corpus",
            hint="pass the text to tokenize it another way, or leave those flags out",
        )


def _resume(run_dir: Path, flags: dict[str, Any], config: Path | None, processes: int) -> Prepared:
    saved = rundir.load_config(run_dir)
    record = saved.record
    given = {k: v for k, v in flags.items() if v is not None}
    if config is not None:
        given = {**load_config_file(config), **given}
    new = {**record, **given}
    rundir.check_resumable(record, new)
    vocab = record.get("vocab-size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        raise InputError(f"{run_dir / rundir.CONFIG_FILE} is damaged: no vocabulary size")
    model_cfg, train_cfg = build_configs(new, vocab_size=vocab)
    placement = resolve_placement(train_cfg.device, train_cfg.dtype)
    _check_world(train_cfg, processes)
    check_training_memory(model_cfg, train_cfg, placement, processes)
    meta = rundir.check_data(run_dir, saved)
    check_data_fits(meta, model_cfg)
    if (run_dir / rundir.STATE).exists():
        check_archive(run_dir / rundir.STATE)  # damaged: refused before anything is printed
    return Prepared(model_cfg, train_cfg, saved.data, run_dir, resume=True)


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
