"""`lmcli compare-rnn`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from lmcli.cli.options import option
from lmcli.cli.render import (
    TrainProgress,
    exit_code,
    note,
    print_grid,
    print_json,
    stdout,
    user_errors,
)
from lmcli.cli.signals import graceful_stop
from lmcli.config import CompareConfig, parse_duration
from lmcli.presets import PRESETS


def compare_rnn(
    corpus: Annotated[
        str,
        typer.Argument(
            help="A token directory, a text file, a directory or quoted glob of text files, or a "
            "named corpus (tokenized at char level)."
        ),
    ] = "shakespeare",
    budget: Annotated[
        str | None,
        option("Training time per model (90s, 3m), evaluation excluded. \\[default: 3m]"),
    ] = None,
    steps: Annotated[int | None, option("Optimiser steps per model, instead of --budget.")] = None,
    match: Annotated[
        str,
        option(
            "params: recurrent widths matched to the transformer's parameters (±10 %); time: "
            "each model at its own size (RNNs 2 × 128), the same training time. "
            "\\[default: params]"
        ),
    ] = "params",
    models: Annotated[
        str, option("Comma-separated: transformer, lstm, gru. \\[default: transformer,lstm]")
    ] = "transformer,lstm",
    preset: Annotated[
        str,
        option(
            f"The transformer's preset ({', '.join(PRESETS)}); its context, batch and "
            "optimiser apply to every model. \\[default: quick]"
        ),
    ] = "quick",
    rnn_layers: Annotated[int, option("Layers of the LSTM/GRU. \\[default: 2]")] = 2,
    eval_points: Annotated[
        int, option("Evaluations per model over its budget (the curves). \\[default: 12]")
    ] = 12,
    prompt: Annotated[
        str, option("The prompt of every model's sample. \\[default: a newline]")
    ] = "\n",
    sample_tokens: Annotated[int, option("Tokens in each sample. \\[default: 300]")] = 300,
    seed: Annotated[int, option("Random seed of training and sampling. \\[default: 1337]")] = 1337,
    device: Annotated[str, option("auto, cpu, cuda, cuda:N or mps. \\[default: auto]")] = "auto",
    threads: Annotated[
        int | None, option("CPU threads for training (default: measured per model).")
    ] = None,
    out: Annotated[
        Path,
        option(
            "The comparison's folder (tokens, one run per model, reports). "
            "\\[default: runs/compare-rnn]"
        ),
    ] = Path("runs/compare-rnn"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the whole report as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress or log lines.")] = False,
) -> None:
    """Train a transformer and recurrent baselines under one budget and compare them side by
    side: bits per byte, speed, memory, learning curves, loss by position in the window, and a
    sample of each. Running it again reuses finished runs and resumes interrupted ones."""
    from lmcli.compare.report import table_rows, text_curves, write_reports
    from lmcli.compare.run import Stage, compare

    with user_errors():
        cfg = CompareConfig(
            corpus=corpus,
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
            budget=None if steps is not None and budget is None else
            parse_duration(budget or "3m", "--budget"),
            steps=steps,
            match=match,
            preset=preset,
            rnn_layers=rnn_layers,
            eval_points=eval_points,
            prompt=prompt,
            sample_tokens=sample_tokens,
            seed=seed,
            device=device,
            threads=threads,
            out=out,
        )  # fmt: skip
        cfg.validate()
        with graceful_stop(note) as stop, TrainProgress(quiet or json_out) as progress:

            def on_event(event: Any) -> None:
                if isinstance(event, Stage):
                    if not (quiet or json_out):
                        note(f"{event.model}: {event.message}")
                else:
                    progress(event)

            comparison = compare(cfg, on_event, stop)
        if comparison.interrupted:
            note(f"stopped; run the same command again to resume ({out})")
            raise typer.Exit(exit_code(stop.signum or signal.SIGINT))
        paths = write_reports(comparison)
        if json_out:
            print_json({**comparison.to_dict(), "reports": {k: str(v) for k, v in paths.items()}})
            return
        print_grid("lmcli compare-rnn", [m.name for m in comparison.models],
                   table_rows(comparison))  # fmt: skip
        console = stdout()
        for line in text_curves(comparison):
            console.print(line, markup=False, highlight=False)
        for m in comparison.models:
            console.print(f"\n--- {m.name} ---", markup=False, highlight=False)
            console.print(prompt + m.sample, markup=False, highlight=False)
        note(f"reports: {paths['markdown']}, {paths['picture']}, {paths['json']}")
