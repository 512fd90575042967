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
from lmcli.cli.launch import launched, run_processes
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
from lmcli.presets import (
    DATA_KEYS,
    MODEL_KEYS,
    PRESETS,
    as_record,
    build_configs,
    load_config_file,
    resolve,
)
from lmcli.training import distributed, warm_start
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
    init_from: Annotated[
        Path | None,
        option(
            "Warm start: begin from this run's weights, architecture and tokenizer, with a "
            "fresh optimizer and schedule (the corpus is encoded with its tokenizer).",
            _PANEL_MODEL,
        ),
    ] = None,
    drop_unknown: Annotated[
        bool,
        option(
            "With --init-from a char model: leave out of the corpus the characters its "
            "vocabulary lacks (else they are refused, listed).",
            "Data",
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress or log lines.")] = False,
    processes: Annotated[
        int,
        typer.Option(
            help="CPU processes of one thread each, training data-parallel (DDP over gloo; "
            "each runs grad_accum / N micro-batches, so --grad-accum must be a multiple of N)."
        ),
    ] = 1,
    **settings: Any,
) -> None:
    """Train a transformer or an LSTM/GRU; leaves a run directory for `lmcli sample`. Every
    model and training setting below is also a config-file key of the same spelling."""
    flags: dict[str, Any] = {"preset": preset, "tokenizer": tokenizer, "vocab-size": vocab_size,
                             "val-files": val_files, "doc-separator": doc_separator}  # fmt: skip
    flags.update({name.replace("_", "-"): value for name, value in settings.items()})
    with user_errors(), ExitStack() as held:
        if processes < 1:
            raise ConfigError(f"--processes must be at least 1 (got {processes})")
        if processes > 1 and not launched():
            raise typer.Exit(run_processes(processes))
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
                    start = Start(init_from, drop_unknown)
                    setup = _prepare(held, corpus, flags, config, resume, out, start,
                                     dist.world_size, quiet or json_out)  # fmt: skip
            except (LmcliError, KeyboardInterrupt) as exc:
                dist.share(getattr(exc, "message", "interrupted"))
                raise
        setup = cast(Prepared | str, dist.share(setup))
        if isinstance(setup, str):
            raise typer.Exit(1)  # rank 0 reported the error
        if not (quiet or json_out):
            print_kv("config", as_record(setup.model, setup.train))
        say = note if dist.is_main else (lambda line: None)  # one rank says it, not each
        with graceful_stop(say) as stop, TrainProgress(quiet) as progress:
            result = run_training(setup.model, setup.train, setup.token_dir, setup.run_dir,
                                  setup.resume, progress, stop, setup.init_from)  # fmt: skip
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
    init_from: Path | None = None  # the weights a warm start begins from


@dataclass(frozen=True)
class Start:
    """How a new run begins: from scratch, or from a run's weights (--init-from)."""

    init_from: Path | None
    drop_unknown: bool


def _prepare(
    held: ExitStack,
    corpus: str | None,
    flags: dict[str, Any],
    config: Path | None,
    resume: Path | None,
    out: Path | None,
    start: Start,
    processes: int,
    quiet: bool,
) -> Prepared:
    """Check everything, then take the run directory (locked until `held` closes) and make or
    reopen the run in it."""
    if resume is not None:
        _refuse_ignored(resume, corpus, flags, out, start)
        held.enter_context(rundir.existing_run(resume))
        return _resume(resume, flags, config, processes)
    if start.drop_unknown and start.init_from is None:
        raise ConfigError("--drop-unknown applies with --init-from (a run's char vocabulary)")
    return _new_run(held, corpus or DEFAULT_CORPUS, flags, config, out, start, processes, quiet)


def _refuse_ignored(
    run_dir: Path, corpus: str | None, flags: dict[str, Any], out: Path | None, start: Start
) -> None:
    """--resume continues a run on its own data, model and folder: refuse what it would ignore."""
    given = [f"the corpus {corpus!r}"] if corpus is not None else []
    given += [f"--{k}" for k in (*DATA_KEYS, "preset") if flags.get(k) is not None]
    given += ["--out"] if out is not None else []
    given += ["--init-from"] if start.init_from is not None else []
    given += ["--drop-unknown"] if start.drop_unknown else []
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
    start: Start,
    processes: int,
    quiet: bool,
) -> Prepared:
    source = warm_start.open_source(start.init_from) if start.init_from is not None else None
    _, train_cfg, merged = _resolve(flags, config, source)  # a bad config fails before any work
    placement = resolve_placement(train_cfg.device, train_cfg.dtype)
    _check_world(train_cfg, processes)
    data = {key: merged.get(key) for key in DATA_KEYS}
    if source is not None and (data["tokenizer"] is not None or data["vocab-size"] is not None):
        raise ConfigError(
            f"--init-from {source.run} encodes the corpus with that run's tokenizer: "
            "--tokenizer and --vocab-size do not apply"
        )
    path = Path(corpus)
    is_token_dir = (path / META_FILE).is_file()
    # A corpus that cannot be read is refused before any folder is made.
    name = path.name if is_token_dir else locate_corpus(corpus).name
    model_name = merged["model"] if source else flags.get("model") or merged.get("preset")
    run_dir = out if out is not None else rundir.default_run_dir(f"{name}-{model_name}")
    if is_token_dir:  # everything can be checked before the run directory exists
        meta = TokenMeta.load(path)
        _check_same_tokenizer(path, meta, data)
        if source is not None:
            warm_start.check_same_tokenizer(path, source)
        model_cfg, _, _ = _resolve(flags, config, source, vocab_size=meta.vocab_size)
        check_data_fits(meta, model_cfg)
        check_training_memory(model_cfg, train_cfg, placement, processes)
    held.enter_context(rundir.new_run(run_dir))
    token_dir = path if is_token_dir else _tokenize(corpus, data, run_dir, source, start, quiet)
    meta = TokenMeta.load(token_dir)
    model_cfg, train_cfg, merged = _resolve(flags, config, source, vocab_size=meta.vocab_size)
    check_data_fits(meta, model_cfg)
    record = {**as_record(model_cfg, train_cfg), "preset": merged.get("preset")}
    rundir.create(run_dir, token_dir, record,
                  init_from=source.record() if source is not None else None)  # fmt: skip
    return Prepared(model_cfg, train_cfg, token_dir, run_dir, resume=False,
                    init_from=source.weights if source is not None else None)  # fmt: skip


def _resolve(
    flags: dict[str, Any],
    config: Path | None,
    source: warm_start.Source | None,
    vocab_size: int = 256,
) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The configs of a new run: preset, config file and flags; a warm start's architecture is
    its source's (a model flag that would change it is refused)."""
    if source is None:
        return resolve(flags, config, vocab_size)
    _, _, merged = resolve(flags, config)
    explicit = {**(load_config_file(config) if config is not None else {}),
                **{k: v for k, v in flags.items() if v is not None}}  # fmt: skip
    merged = {**merged, **warm_start.architecture(source, explicit, MODEL_KEYS)}
    if vocab_size != 256 and vocab_size != source.model.vocab_size:
        raise InputError(
            f"the corpus's tokens have a vocabulary of {vocab_size:,}; the weights of "
            f"{source.run} expect {source.model.vocab_size:,}"
        )
    model_cfg, train_cfg = build_configs(merged, source.model.vocab_size)
    return model_cfg, train_cfg, merged


def _tokenize(
    corpus: str,
    data: dict[str, Any],
    run_dir: Path,
    source: warm_start.Source | None,
    start: Start,
    quiet: bool,
) -> Path:
    """Tokenize a text corpus into the run's own data folder."""
    cfg = TokenizeConfig(corpus=corpus, tokenizer=data["tokenizer"] or "char",
                         vocab_size=data["vocab-size"], val_files=data["val-files"],
                         doc_separator=data["doc-separator"] or "auto",
                         tokenizer_from=source.run if source is not None else None,
                         drop_unknown=start.drop_unknown,
                         out=run_dir / rundir.DATA_DIR)  # fmt: skip
    if not quiet:
        using = f"{source.run}'s tokenizer" if source is not None else cfg.tokenizer
        note(f"tokenizing {corpus} ({using}) into {cfg.out}")
    result = tokenize_corpus(cfg)
    if not quiet:
        skipped_note(result.skipped)
    return result.out_dir


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
    init_from = None
    if (run_dir / rundir.STATE).exists():
        check_archive(run_dir / rundir.STATE)  # damaged: refused before anything is printed
    elif saved.init_from is not None:  # a warm start killed before its first save
        init_from = warm_start.recorded_source(saved.init_from, run_dir)
    return Prepared(model_cfg, train_cfg, saved.data, run_dir, resume=True, init_from=init_from)


def _rows(r: TrainResult) -> list[tuple[str, str]]:
    return [
        ("parameters", f"{r.params:,}"),
        ("steps", f"{r.steps:,}"),
        ("tokens seen", f"{r.tokens_seen:,}"),
        ("training time", f"{r.train_seconds:.1f} s"),
        ("wall time", f"{r.wall_seconds:.1f} s"),
        *([("compiling (in wall time)", f"{r.compile_seconds:.1f} s")] * bool(r.compile_seconds)),
        ("tokens/s", f"{r.tokens_per_s:,.0f}"),
        ("best val loss", f"{r.best_val_loss:.4f}"),
        ("best val bits/byte", f"{r.best_val_bpb:.4f}"),
        ("last val loss", f"{r.last_val_loss:.4f}"),
        ("checkpoint", str(r.checkpoint)),
    ]
