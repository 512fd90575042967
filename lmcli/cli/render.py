"""Everything the terminal shows: errors, progress bars, tables. With inspect_terminal.py (the
panels of `lmcli inspect`), the only module importing rich.

Results go to stdout; progress, logs and errors to stderr. Progress bars draw only on a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
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

from lmcli.errors import EnvironmentFailure, LmcliError, environment_error

EXIT_ERROR = 1


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def exit_code(signum: int) -> int:
    """The shell's convention for a command ended by a signal: 128 + its number (Ctrl-C: 130,
    SIGTERM: 143, SIGHUP: 129)."""
    return 128 + signum


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an LmcliError into `error: …` (+ `hint: …`) on stderr and exit 1; so too the
    environment's failures (a full disk, a path that cannot be written, no memory). A reader that
    went away (`| head`) ends the command quietly; Ctrl-C and other stops exit 128 + signal."""
    try:
        yield
        sys.stdout.flush()  # a full or broken stdout fails here, not at interpreter exit
    except LmcliError as exc:
        _fail(exc)
    except BrokenPipeError:
        # The reader went away (`lmcli … | head`): stop quietly, as `head` expects.
        _silence_stdout()
        raise typer.Exit(0) from None
    except OSError as exc:
        _fail(environment_error(exc))
    except MemoryError:
        _fail(EnvironmentFailure("out of memory", hint="use a smaller model, batch or context"))
    except KeyboardInterrupt as exc:
        _say("interrupted")
        raise typer.Exit(exit_code(getattr(exc, "signum", signal.SIGINT))) from None


def _fail(exc: LmcliError) -> None:
    # Escaped: a message's own brackets (a path "data[1].txt", "lmcli[export]") are not markup.
    _say(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
    if exc.hint:
        _say(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True)
    _silence_stdout()  # what a failed command left buffered is not a result
    raise typer.Exit(EXIT_ERROR) from None


def _say(text: str, markup: bool = False) -> None:
    with suppress(OSError):  # stderr is gone too: the exit code is all that is left to say it
        stderr().print(text, markup=markup, soft_wrap=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing (not even Python's last flush) writes there."""
    with suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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


def print_grid(title: str, columns: Sequence[str], rows: Sequence[tuple[str, list[str]]]) -> None:
    """A table with a header: one column per thing compared, one row per measure."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in columns:
        table.add_column(name, justify="right")
    for key, cells in rows:
        table.add_row(key, *cells)
    stdout().print(table)


def print_rows(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[str] = ()
) -> None:
    """A table of records, one per row; the columns named in `left` are left-aligned and never
    wrap (names), the others right-aligned (numbers)."""
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name, justify="left" if name in left else "right", no_wrap=name in left)
    for row in rows:
        table.add_row(*row)
    stdout().print(table)


def print_kv(title: str, record: dict[str, Any]) -> None:
    """A compact `key=value` block on stderr (the resolved config before training)."""
    err = stderr()
    body = "  ".join(f"{k}={v}" for k, v in record.items())
    err.print(f"[bold]{title}[/]: {body}", markup=True, soft_wrap=False)


def note(message: str) -> None:
    stderr().print(message, markup=False, soft_wrap=True)


class TrainProgress:
    """Draws training events: a bar (step, loss, lr, tokens/s, ETA) on a terminal, one line per
    evaluation always. `quiet` shows nothing."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = stderr()
        self._progress = Progress(
            TextColumn("step {task.fields[step]:>6}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} tok/s"),
            TimeRemainingColumn(),
            console=self.console,
            disable=quiet or not self.console.is_terminal,
        )
        self._task = self._progress.add_task("train", total=1.0, step=0, loss="-", lr="-", rate="-")

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        kind = type(event).__name__
        if kind == "Started":
            mb = event.memory_estimate_bytes / 2**20
            self.console.print(
                f"{event.params:,} parameters on {event.device} ({event.dtype}, "
                f"{event.threads} thread{'s' * (event.threads > 1)}"
                f"{', compiled' if event.compiled else ''}"
                f"{f', {event.world_size} processes' if event.world_size > 1 else ''}); "
                f"≈{mb:,.0f} MiB; ≈{event.step_seconds_estimate * 1000:,.0f} ms per step of "
                f"{event.tokens_per_step:,} tokens"
                + (f"; resuming at step {event.start_step}" if event.start_step else ""),
                markup=False,
                soft_wrap=True,
            )
            for line in event.notes:
                self.console.print(f"note: {line}", markup=False, soft_wrap=True)
        elif kind == "Logged":
            self._progress.update(
                self._task,
                completed=event.progress,
                step=event.step,
                loss=f"{event.loss:.4f}",
                lr=f"{event.lr:.2e}",
                rate=f"{event.tokens_per_s:,.0f}",
            )
        elif kind == "Sampled":
            rule = f"── sample at step {event.step:,} " + "─" * 24
            self.console.print(f"{rule}\n{event.text.strip(chr(10))}\n{'─' * len(rule)}",
                               markup=False, soft_wrap=True, highlight=False)  # fmt: skip
        elif kind == "Evaluated":
            e = event.evaluation
            self.console.print(
                f"step {event.step:>6}  val loss {e.loss:.4f}  ppl {e.perplexity:.2f}  "
                f"bits/byte {e.bits_per_byte:.4f}  ({event.train_seconds:.0f} s)"
                + ("  *best" if event.best else ""),
                markup=False,
                soft_wrap=True,
            )
