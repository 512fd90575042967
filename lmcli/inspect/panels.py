"""What a view draws, as plain data: a few kinds of panel that every renderer knows.

A view (lmcli/inspect/views/) computes its numbers and describes them as panels; the terminal
(lmcli/cli/inspect_terminal.py), the PNG pictures (pictures.py) and the HTML page (page.py) each
draw the five kinds below, so that a new view needs no new drawing code and the three outputs
cannot disagree about the numbers. Colours follow one fixed scale, `lo` to `hi` (0 to 1 unless a
panel says otherwise), with a legend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Heatmap:
    """A grid of values: rows x cols. None marks a cell that is masked (drawn blank, not 0):
    a key above the diagonal, or outside a local layer's window."""

    title: str
    values: list[list[float | None]]  # (rows, cols)
    rows: list[str]  # row labels (queries, layers)
    cols: list[str]  # column labels (keys, positions)
    lo: float = 0.0
    hi: float = 1.0
    labels: list[list[str]] | None = None  # text written in each cell (the logit lens's tokens)
    note: str = ""  # one line under the panel (the window, the shared kv head)
    row_axis: str = ""
    col_axis: str = ""


@dataclass(frozen=True)
class Bars:
    """Horizontal bars, one per label; `cut` draws a line after that many bars (top-k/top-p)."""

    title: str
    labels: list[str]
    values: list[float]
    lo: float = 0.0
    hi: float = 1.0
    cut: int | None = None  # bars before it are kept, the rest are cut off
    cut_label: str = ""
    note: str = ""


@dataclass(frozen=True)
class Span:
    """A piece of text coloured by value (None: no colour), with a tooltip."""

    text: str
    value: float | None
    tip: str = ""


@dataclass(frozen=True)
class Spans:
    """Text as coloured pieces (tokens by id, or by surprisal)."""

    title: str
    spans: list[Span]
    lo: float = 0.0
    hi: float = 1.0
    legend: str = ""  # what the colour means, e.g. "surprisal, 0 to 6.0 bits"
    note: str = ""
    graded: bool = True  # False: colours only tell neighbours apart (no value to print)


@dataclass(frozen=True)
class Lines:
    """Curves over a shared x axis (None: no point there)."""

    title: str
    x: list[float]
    series: dict[str, list[float | None]]
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False
    log_y: bool = False  # a log y axis leaves out values <= 0 (the note should say so)
    note: str = ""


@dataclass(frozen=True)
class Table:
    """Rows of text and numbers; `shade` colours the numeric cells on the lo..hi scale."""

    title: str
    header: list[str]
    rows: list[list[str | float | int]]
    shade: bool = False
    lo: float = 0.0
    hi: float = 1.0
    note: str = ""


Panel = Heatmap | Bars | Spans | Lines | Table


@dataclass(frozen=True)
class ViewResult:
    """One view on one model: its panels to draw and its numbers for --json."""

    view: str  # "tokens", "next", ...
    title: str
    explains: str  # one sentence: what the view shows
    panels: list[Panel]
    data: dict[str, Any]  # what --json prints (the numbers the panels were drawn from)
    notes: list[str] = field(default_factory=list)  # e.g. how a long prompt was cut

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "explains": self.explains, "notes": self.notes, **self.data}


def kind(panel: Panel) -> str:
    """The panel's kind as a word: heatmap, bars, spans, lines or table."""
    return type(panel).__name__.lower()


def scaled(value: float, lo: float, hi: float) -> float:
    """value on the panel's scale, clipped to 0..1 (what every renderer colours by)."""
    if hi <= lo:
        return 0.0
    return min(1.0, max(0.0, (value - lo) / (hi - lo)))
