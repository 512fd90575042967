"""`lmcli runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcli.cli.render import note, print_json, print_rows, user_errors
from lmcli.curves import sparkline
from lmcli.errors import ConfigError
from lmcli.runs import RunSummary

DEFAULT_PLOT = Path("runs.png")


def runs(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run directories, or folders to look for runs in (three levels deep, so "
            "compare-rnn's folders too). \\[default: runs]",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        bool,
        typer.Option(
            help="Overlay the runs' learning curves (bits per byte against tokens seen and "
            "against training time) in a PNG, and sketch them here."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Where --plot writes its PNG. \\[default: runs.png]", show_default=False),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the runs as one JSON object.")
    ] = False,
) -> None:
    """List runs (model, parameters, steps, best val bits/byte, time, status: finished,
    interrupted or training) and compare their learning curves."""
    with user_errors():
        from lmcli.runs import draw_curves, find_runs  # matplotlib only for --plot, in there

        if out is not None and not plot:
            raise ConfigError("--out is where --plot writes its PNG: pass --plot too")
        found = find_runs(paths or [Path("runs")])
        picture = None
        if plot:
            picture = out or DEFAULT_PLOT
            draw_curves(found, picture)
        if json_out:
            print_json({"runs": [r.to_dict() for r in found],
                        "picture": str(picture) if picture else None})  # fmt: skip
            return
        _table(found)
        if plot:
            _sketch(found)
            note(f"learning curves: {picture}")


def _table(found: list[RunSummary]) -> None:
    rows = [
        (
            r.name,
            r.model,
            f"{r.params:,}" if r.params is not None else "?",
            f"{r.steps:,}",
            f"{r.best_val_bpb:.4f}" if r.best_val_bpb is not None else "-",
            _duration(r.train_seconds),
            r.status if r.status != "training" else f"training ({r.holder})",
        )
        for r in found
    ]
    header = ("run", "model", "params", "steps", "best val bpb", "time", "status")
    print_rows(f"lmcli runs ({len(found)})", header, rows, left=("run", "model", "status"))


def _sketch(found: list[RunSummary]) -> None:
    """Each run's val bits/byte over its evaluations, as a sparkline on its own scale."""
    typer.echo("val bits/byte over training (each run's own scale, high to low is good):")
    width = max(len(r.name) for r in found)
    for r in found:
        bpb = [p["val_bpb"] for p in r.curve]
        line = f"{sparkline(bpb)}  {bpb[0]:.3f} → {bpb[-1]:.3f}" if bpb else "(no evaluation)"
        typer.echo(f"  {r.name:<{width}}  {line}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
