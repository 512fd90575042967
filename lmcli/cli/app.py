"""The `lmcli` Typer app: the command list, --version, and the entry point.

A command's module is imported only when that command runs (or when --help lists them all): each
pulls in its own library code, and `lmcli sample` should not wait for what `lmcli tokenize` and
`lmcli train` import.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from lmcli import __version__

# name: (module defining a function of that name, "-" spelled "_", or "module:function";
# one-line description)
COMMANDS = {
    "tokenize": (
        "lmcli.cli.tokenize",
        "Turn text files or a named corpus into token files for training.",
    ),
    "train": ("lmcli.cli.train", "Train a transformer or an LSTM/GRU language model."),
    "sample": ("lmcli.cli.sample", "Generate text from a trained model."),
    "eval": (
        "lmcli.cli.evaluate:evaluate",
        "Measure a run on any text: loss, perplexity and bits per byte.",
    ),
    "inspect": (
        "lmcli.cli.inspect",
        "Show what a model does: tokens, next token, attention, surprise, heads, lens, ...",
    ),
    "runs": ("lmcli.cli.runs", "List runs and compare their learning curves."),
    "export": (
        "lmcli.cli.export",
        "Export a transformer to Hugging Face or llama.cpp (GGUF), verified there.",
    ),
    "compare-rnn": (
        "lmcli.cli.compare",
        "Train a transformer and an LSTM/GRU under one budget and compare them side by side.",
    ),
    "bench": ("lmcli.cli.bench", "Measure tokenizing, training and sampling on this machine."),
}


# Values are click Commands; Any because typer keeps its click private (typer._click).
class _LazyCommands(MutableMapping[str, Any]):
    """The group's commands by name, each built from its module the first time it is looked up
    (a mapping, so that typo suggestions still see every name)."""

    def __init__(self) -> None:
        self._built: dict[str, TyperCommand] = {}

    def __getitem__(self, name: str) -> TyperCommand:
        if name not in self._built:
            where, description = COMMANDS[name]  # KeyError for an unknown name
            module, _, attribute = where.partition(":")
            function = getattr(importlib.import_module(module), attribute or name.replace("-", "_"))
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(name=name, help=description)(function)
            command = typer.main.get_command(single)
            assert isinstance(command, TyperCommand)  # one command: not a group
            self._built[name] = command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("lmcli's commands are fixed")

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LazyGroup(TyperGroup):
    """A command group whose commands are imported on first use, listed in workflow order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _LazyCommands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)


app = typer.Typer(
    name="lmcli",
    cls=LazyGroup,
    help="A workbench for training and sampling tiny language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    if sys.stdout is None:  # started with stdout closed (`>&-`): no place for any result
        if sys.stderr is not None:
            sys.stderr.write("error: stdout is closed, so lmcli has nowhere to write its output\n"
                             "hint: redirect it to a file or to /dev/null instead\n")  # fmt: skip
        raise SystemExit(1)
    app()
