"""`lmcli eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcli.cli.render import note, print_json, print_table, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.config import EvalConfig
from lmcli.curves import doubling_spans, span_means

DEFAULTS = EvalConfig(run=Path("."))


def evaluate(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run directory (its best.safetensors) or a weights file beside its "
            "tokenizer.json.",
            show_default=False,
        ),
    ],
    data: Annotated[
        str | None,
        typer.Argument(
            help="A token directory made with the run's tokenizer, or text (a file, a folder "
            "or quoted glob of files, a named corpus), encoded with it and measured whole. "
            "\\[default: the run's own validation split]",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Of a token directory (or the run's data): train or val.")
    ] = DEFAULTS.split,
    by_position: Annotated[
        bool,
        typer.Option(
            help="Also the bits per byte at each position of the window (how much the model "
            "gains from longer context)."
        ),
    ] = False,
    drop_unknown: Annotated[
        bool,
        typer.Option(
            help="Leave out of a text the characters a char model has never seen, instead of "
            "refusing it."
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = DEFAULTS.device,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch. \\[default: 1; more help a large model on an idle "
            "machine]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = (
        DEFAULTS.batch_size
    ),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Measure a run on any text: loss, perplexity and bits per byte over every window of the
    model's context (non-overlapping, as training's evaluations are)."""
    cfg = EvalConfig(run=run, data=data, split=split, by_position=by_position,
                     drop_unknown=drop_unknown, device=device, threads=threads,
                     batch_size=batch_size)  # fmt: skip
    with user_errors(), stop_at_once():
        from lmcli.training.evaluate import evaluate_run

        result = evaluate_run(cfg)
        for line in result.notes:
            note(f"note: {line}")
        if json_out:
            print_json(result.to_dict())
            return
        step = f" (step {result.step:,})" if result.step is not None else ""
        print_table(
            "lmcli eval",
            [
                ("weights", result.weights + step),
                ("data", result.data),
                ("tokens", f"{result.tokens:,} in {result.windows:,} windows of {result.context}"),
                ("loss", f"{result.loss:.4f}"),
                ("perplexity", f"{result.perplexity:.3f}"),
                ("bits per byte", f"{result.bits_per_byte:.4f}"),
                ("bytes per token", f"{result.bytes_per_token:.3f}"),
            ],
        )
        if result.bpb_by_position is not None:
            spans = doubling_spans(result.context)
            typer.echo("bits per byte by position in the window (mean over each span):")
            for (a, b), value in zip(spans, span_means(result.bpb_by_position, spans), strict=True):
                label = f"{a}" if a == b else f"{a}-{b}"
                typer.echo(f"  {label:>9}  {value:.4f}")
