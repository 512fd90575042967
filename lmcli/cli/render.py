"""Everything the terminal shows: errors, progress bars, tables. The only module importing rich.

Results go to stdout; progress, logs and errors to stderr. Progress bars draw only on a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lmcli.errors import LmcliError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an LmcliError into `error: …` (+ `hint: …`) on stderr and exit 1; Ctrl-C into 130."""
    err = stderr()
    try:
        yield
    except LmcliError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", markup=True, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {exc.hint}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        err.print("interrupted", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


class ByteProgress:
    """A progress callback `(stage, done, total)` drawing one bar per stage (bytes, MB/s, ETA)."""

    def __init__(self, enabled: bool = True) -> None:
        console = stderr()
        self._progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(task, completed=done, total=total)

    def __enter__(self) -> ByteProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def print_json(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, indent=1, ensure_ascii=False))


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    stdout().print(table)
