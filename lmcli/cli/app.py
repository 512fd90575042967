"""The `lmcli` Typer app: the command list, --version, and the entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from lmcli import __version__
from lmcli.cli.tokenize import tokenize
from lmcli.cli.train import train

app = typer.Typer(
    name="lmcli",
    help="A workbench for training and sampling tiny language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(help="Turn a text file or a named corpus into token files for training.")(tokenize)
app.command(help="Train a transformer or an LSTM/GRU language model.")(train)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A workbench for training and sampling tiny language models."""


def main() -> None:
    app()
