"""`lmcli tokenize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcli.cli.render import ByteProgress, note, print_json, print_table, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.config import TokenizeConfig
from lmcli.corpus.prepare import TokenizeResult, tokenize_corpus


def tokenize(
    corpus: Annotated[
        str,
        typer.Argument(
            help="A text file; a directory of them (read recursively, in sorted order) or a "
            "quoted glob ('books/**/*.txt'); or a named corpus (shakespeare, which ships with "
            "lmcli)."
        ),
    ],
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer",
            "-t",
            help="char (one token per character), bpe (byte-level BPE trained on the corpus), "
            "or a pretrained tiktoken encoding (gpt2, cl100k_base, ...).",
        ),
    ] = "char",
    tokenizer_from: Annotated[
        Path | None,
        typer.Option(
            help="Encode with the tokenizer of this run or token directory (e.g. to evaluate "
            "or fine-tune a run on new text) instead of making one.",
            show_default=False,
        ),
    ] = None,
    drop_unknown: Annotated[
        bool,
        typer.Option(
            help="With --tokenizer-from a char vocabulary: leave out the characters it lacks "
            "(counted in meta.json) instead of refusing the corpus."
        ),
    ] = False,
    vocab_size: Annotated[
        int | None,
        typer.Option(
            help="BPE vocabulary size: 256 byte tokens + merges. \\[default: 4096 for bpe]",
            show_default=False,
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(help="Fraction at the end of the corpus (cut at a line) held out for val."),
    ] = 0.1,
    val_files: Annotated[
        int | None,
        typer.Option(
            help="For a directory or glob: hold out its last N files (sorted order) for "
            "validation instead of --val-fraction.",
            show_default=False,
        ),
    ] = None,
    doc_separator: Annotated[
        str,
        typer.Option(
            help="What follows each file of a directory or glob: auto (char: a blank line; "
            "BPE and pretrained: the <|endoftext|> token, trained into the vocabulary), eot, "
            "blank-line or none."
        ),
    ] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory. \\[default: tokens/CORPUS-TOKENIZER]", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace the output directory if it exists.")] = False,
    exact: Annotated[
        bool,
        typer.Option(
            help="Keep the text byte-exact: no BOM stripping or newline normalisation, and "
            "invalid UTF-8 is an error. By default a leading BOM is dropped, CRLF and CR become "
            "LF, and invalid bytes become U+FFFD (all counted in the summary).",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="LMCLI_DATA_DIR",
            help="Where named corpora are downloaded and cached. "
            "\\[default: data/downloads in a checkout, else ~/.cache/lmcli]",
            show_default=False,
        ),
    ] = None,
    bpe_train_mb: Annotated[
        float,
        typer.Option(
            help="Learn BPE merges on at most this many MB of the training split, spread evenly "
            "over it (the trainer's memory grows with the text it counts). All of it is encoded."
        ),
    ] = 32.0,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Threads encoding in parallel. \\[default: cores, at most 4]", show_default=False
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")
    ] = False,
) -> None:
    """Turn a text file, a folder of them or a named corpus into train.bin / val.bin token files
    + meta.json."""
    cfg = TokenizeConfig(
        corpus=corpus,
        tokenizer=tokenizer,
        tokenizer_from=tokenizer_from,
        drop_unknown=drop_unknown,
        vocab_size=vocab_size,
        val_fraction=val_fraction,
        val_files=val_files,
        doc_separator=doc_separator,
        out=out,
        force=force,
        exact=exact,
        data_dir=data_dir,
        bpe_train_mb=bpe_train_mb,
        threads=threads,
    )
    with user_errors(), stop_at_once():
        with ByteProgress() as progress:
            result = tokenize_corpus(cfg, progress)
        skipped_note(result.skipped)
        if json_out:
            print_json(result.to_dict())
        else:
            print_table("lmcli tokenize", _rows(result))


def _rows(r: TokenizeResult) -> list[tuple[str, str]]:
    return [
        ("corpus", r.corpus + _documents(r)),
        ("output", str(r.out_dir)),
        ("tokenizer", r.tokenizer),
        ("vocab size", f"{r.vocab_size:,}"),
        ("characters", f"{r.chars:,}"),
        ("bytes", f"{r.bytes:,}"),
        ("tokens", f"{r.tokens:,}"),
        ("bytes per token", f"{r.bytes_per_token:.3f}"),
        ("train / val tokens", f"{r.train_tokens:,} / {r.val_tokens:,}"),
        ("token dtype", r.dtype),
        ("text changes", _changes(r.text_changes)),
        ("sha256", r.sha256[:16] + "…"),
        ("tokenizer time", f"{r.tokenizer_seconds:.2f} s" + _trained_on(r)),
        ("encode speed", f"{r.encode_mb_per_s:.1f} MB/s"),
        ("total time", f"{r.seconds:.2f} s"),
    ]


def _documents(r: TokenizeResult) -> str:
    if r.documents == 1 and not r.skipped:
        return ""
    between = {"eot": ", <|endoftext|> after each", "blank-line": ", a blank line after each"}
    return f" ({r.documents:,} files{between.get(r.separator or '', '')})"


def _trained_on(r: TokenizeResult) -> str:
    return f" (merges from {r.bpe_train_mb:.1f} MB)" if r.bpe_train_mb is not None else ""


def _changes(c: dict[str, Any]) -> str:
    if c["mode"] == "exact":
        return "none (--exact)"
    parts = []
    if c["bom_stripped"]:
        parts.append("BOM stripped")
    if c["crlf_to_lf"]:
        parts.append(f"{c['crlf_to_lf']:,} CRLF→LF")
    if c["cr_to_lf"]:
        parts.append(f"{c['cr_to_lf']:,} CR→LF")
    if c["invalid_bytes_replaced"]:
        parts.append(f"{c['invalid_bytes_replaced']:,} invalid bytes→U+FFFD")
    if c.get("unknown_dropped"):
        dropped = c["unknown_dropped"]
        parts.append(f"{dropped['count']:,} characters outside the vocabulary dropped")
    return ", ".join(parts) or "none needed"


def skipped_note(skipped: list[dict[str, str]], shown: int = 10) -> None:
    """Name on stderr the files of a directory or glob that were left out, and why."""
    if not skipped:
        return
    note(f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} (listed in meta.json):")
    for entry in skipped[:shown]:
        note(f"  {entry['name']}: {entry['why']}")
    if len(skipped) > shown:
        note(f"  and {len(skipped) - shown} more")
