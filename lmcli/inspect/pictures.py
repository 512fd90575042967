"""The PNG pictures: one per view, one subplot per panel, drawn with matplotlib.

Colours follow the page's scale (svg.py): matplotlib's "Blues" colormap, which is the same
ColorBrewer ramp, from each panel's `lo` (white) to its `hi` (dark blue), with a colorbar. A
masked heatmap cell is hatched grey, never a colour of the scale. matplotlib is imported only
when a picture is drawn.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from lmcli.inspect.panels import Bars, Heatmap, Lines, Panel, Spans, Table, ViewResult, scaled
from lmcli.inspect.svg import BLUES, cell_text, number, visible

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_PANELS = 12  # beyond, the picture draws the first ones and says so
PER_ROW = 3
DPI = 110
PANEL_WIDTH = {1: 10.0, 2: 7.2, 3: 6.0}  # inches, by the number of panels in a row
PANEL_HEIGHT = 4.8
MAX_TICKS = 24  # axis labels beyond this many are thinned out
MAX_CELL_TEXTS = 600  # a heatmap with more cells than this shows no cell labels
MAX_CELL_NUMBERS = 64  # a heatmap of at most this many cells writes its values in them
MAX_TABLE_ROWS = 30
TABLE_ROW = 0.24  # inches
SPAN_FONT = 9.5  # points
SPAN_LINE = SPAN_FONT * 1.8  # points
DARK = 0.55  # on the scale, beyond this text is white
MASKED = "#eceef1"
MUTED = "#4a5263"
INK = "#1d2330"
CUT = "#c0392b"
BAR = BLUES[6]


def write_picture(path: Path, result: ViewResult) -> None:
    """Draw `result` into the PNG `path` (atomically: a crash leaves no half picture)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    from lmcli.files import atomic_write

    panels = result.panels[:MAX_PANELS]
    notes = list(result.notes)
    if len(result.panels) > MAX_PANELS:
        notes.append(f"showing the first {MAX_PANELS} of {len(result.panels)} panels")
    per_row = min(PER_ROW, max(1, len(panels)))
    panel_width = PANEL_WIDTH[per_row]
    if len(panels) == 1 and isinstance(panels[0], Heatmap) and _square(panels[0]):
        panel_width = PANEL_WIDTH[3]  # a square map alone: no empty margin beside it
    heights = [
        max(_height(p, panel_width) for p in panels[i : i + per_row])
        for i in range(0, len(panels), per_row)
    ] or [1.0]
    width = panel_width * per_row
    explains = textwrap.wrap(result.explains, width=int(width * 12)) or [""]
    head = 0.6 + 0.2 * len(explains)  # inches: the title and the explaining sentence
    foot = 0.1 + 0.2 * len(notes)
    height = sum(heights) + head + foot
    with matplotlib.rc_context({"hatch.color": "#c4c8d0"}):
        fig, axes = plt.subplots(len(heights), per_row, figsize=(width, height), dpi=DPI,
                                 squeeze=False, gridspec_kw={"height_ratios": heights})  # fmt: skip
        try:
            # the panels' box, (left, bottom, width, height): under the title, above the notes
            box = (0, foot / height, 1, 1 - (head + foot) / height)
            fig.set_layout_engine("constrained", rect=box)
            top: dict[str, Any] = {"ha": "center", "va": "top"}
            fig.text(0.5, 1 - 0.12 / height, _plain(result.title), size=15, weight="bold", **top)
            fig.text(0.5, 1 - 0.5 / height, _plain("\n".join(explains)), size=10.5, color=MUTED,
                     **top)  # fmt: skip
            if notes:
                fig.text(0.01, 0.1 / height, _plain("\n".join(notes)), size=9, color="#8a5300")
            for k, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
                _draw(fig, ax, panel, panel_width, heights[k // per_row])
            for ax in list(axes.flat)[len(panels) :]:
                ax.set_axis_off()
            if not panels:
                axes.flat[0].text(0.5, 0.5, "no panels", ha="center", color=MUTED)
            with warnings.catch_warnings():  # a glyph DejaVu lacks (an emoji) is drawn as a box
                warnings.filterwarnings("ignore", message="Glyph .* missing")
                atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
        finally:
            plt.close(fig)


def _height(panel: Panel, width: float) -> float:
    """The inches a panel needs: the standard height, less for a short list or text."""
    if isinstance(panel, Bars):
        return min(PANEL_HEIGHT, max(2.4, 1.2 + 0.3 * len(panel.values)))
    if isinstance(panel, Table):
        return min(PANEL_HEIGHT * 1.6, 1.2 + TABLE_ROW * (min(len(panel.rows), MAX_TABLE_ROWS) + 1))
    if isinstance(panel, Spans):
        per_line = _per_line(width, SPAN_FONT * 0.62)
        placed, _ = _wrap(panel, per_line, 10**6)
        lines = 1 + max((row for row, *_ in placed), default=0)
        return min(PANEL_HEIGHT * 1.5, 1.5 + lines * SPAN_LINE / 72)
    if isinstance(panel, Heatmap) and not _square(panel):
        return min(PANEL_HEIGHT, max(2.8, 1.9 + 0.4 * len(panel.values)))
    return PANEL_HEIGHT


def _square(h: Heatmap) -> bool:
    """Whether a heatmap is drawn with square cells: query x key maps, positions x positions."""
    return not h.labels and len(h.values) == max((len(r) for r in h.values), default=0)


def _plain(text: str) -> str:
    """text that matplotlib draws as it is: a "$" is a dollar, not the start of TeX math."""
    return text.replace("$", r"\$")


def _short(text: str, chars: int = 14) -> str:
    """A label: visible whitespace, cut to `chars`, plain text."""
    shown = visible(text)
    return _plain(shown if len(shown) <= chars else shown[: chars - 1] + "…")


def _draw(fig: Figure, ax: Axes, panel: Panel, width: float, height: float) -> None:
    ax.set_title(_plain(panel.title), fontsize=11)
    if isinstance(panel, Heatmap):
        _heatmap(fig, ax, panel)
    elif isinstance(panel, Bars):
        _bars(ax, panel)
    elif isinstance(panel, Spans):
        _spans(fig, ax, panel, width, height)
    elif isinstance(panel, Lines):
        _lines(ax, panel)
    else:
        _table(fig, ax, panel, height)


def _cmap() -> Any:
    from matplotlib import colormaps

    # masked cells are transparent: the hatched background shows through
    return colormaps["Blues"].with_extremes(bad=(0, 0, 0, 0))


def _colorbar(fig: Figure, ax: Axes, lo: float, hi: float, label: str = "", **kw: Any) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1), _cmap())
    fig.colorbar(mappable, ax=ax, label=_plain(label), **kw).ax.tick_params(labelsize=8)


def _label(ax: Axes, axis: str, note: str) -> None:
    """The x axis's name and, under it, the panel's note."""
    ax.set_xlabel(_plain("\n".join(t for t in (axis, textwrap.fill(note, 80)) if t)), fontsize=9)


def _ticks(count: int) -> range:
    return range(0, count, max(1, math.ceil(count / MAX_TICKS)))


def _heatmap(fig: Figure, ax: Axes, h: Heatmap) -> None:
    import numpy as np
    from matplotlib.patches import Rectangle

    rows, cols = len(h.values), max((len(r) for r in h.values), default=0)
    grid = np.full((max(rows, 1), max(cols, 1)), np.nan)
    for i, row in enumerate(h.values):
        grid[i, : len(row)] = [np.nan if v is None else v for v in row]
    square = _square(h)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=_cmap(), vmin=h.lo, vmax=h.hi, zorder=1,
                      aspect="equal" if square else "auto", interpolation="nearest")  # fmt: skip
    hatched = Rectangle((-0.5, -0.5), max(cols, 1), max(rows, 1), facecolor=MASKED,
                        hatch="////", linewidth=0, zorder=0)  # fmt: skip
    ax.add_patch(hatched)
    size = 8 if max(rows, cols) <= 24 else 6.5
    xs, ys = _ticks(cols), _ticks(rows)
    col_names = [_short(h.cols[j]) if j < len(h.cols) else str(j) for j in xs]
    upright = sum(map(len, col_names)) <= 60
    ax.set_xticks(list(xs), col_names, fontsize=size, rotation=0 if upright else 90)
    row_names = [_short(h.rows[i]) if i < len(h.rows) else str(i) for i in ys]
    ax.set_yticks(list(ys), row_names, fontsize=size)
    ax.tick_params(length=2)
    if h.labels and rows * cols <= MAX_CELL_TEXTS:
        size = 9 if rows * cols <= 100 else 6.5
        for i, row_labels in enumerate(h.labels[:rows]):
            for j, text in enumerate(row_labels[:cols]):
                dark = not math.isnan(grid[i, j]) and scaled(grid[i, j], h.lo, h.hi) > DARK
                ink = "white" if dark else INK
                ax.text(j, i, _short(cell_text(text), 6), ha="center", va="center", zorder=2,
                        fontsize=size, color=ink, family="monospace")  # fmt: skip
    elif not h.labels and rows * cols <= MAX_CELL_NUMBERS:  # a small grid: its numbers too
        for i in range(rows):
            for j in range(cols):
                if math.isnan(grid[i, j]):
                    continue
                dark = scaled(grid[i, j], h.lo, h.hi) > DARK
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        zorder=2, color="white" if dark else INK)  # fmt: skip
    ax.set_ylabel(_plain(h.row_axis), fontsize=9)
    _label(ax, h.col_axis, h.note)
    fig.colorbar(image, ax=ax, shrink=0.85).ax.tick_params(labelsize=8)


def _bars(ax: Axes, b: Bars) -> None:
    from matplotlib.colors import to_rgba

    n = len(b.values)
    cut = b.cut if b.cut is not None and 0 <= b.cut <= n else None
    colours = [to_rgba(BAR, 1.0 if cut is None or i < cut else 0.35) for i in range(n)]
    lo, hi = min([b.lo, *b.values]), max([b.hi, *b.values])
    bars = ax.barh(range(n), [v - lo for v in b.values], left=lo, color=colours, height=0.75)
    size = max(5.0, min(9.0, 260 / max(n, 1)))
    ax.bar_label(bars, labels=[number(v) for v in b.values], fontsize=size - 1, padding=2)
    ax.set_yticks(range(n), [_short(t, 20) for t in b.labels], fontsize=size, family="monospace")
    ax.set_ylim(max(n, 1) - 0.5, -0.5)  # the first bar on top
    ax.set_xlim(lo, hi + 0.12 * (hi - lo or 1))  # room for the values
    if cut is not None:
        ax.axhline(cut - 0.5, color=CUT, linestyle="--", linewidth=1)
        ax.text(0.99, cut - 0.5, _plain(b.cut_label), transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8, color=CUT)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", length=0)
    _label(ax, "", b.note)


def _spans(fig: Figure, ax: Axes, s: Spans, width: float, height: float) -> None:
    """The text as monospace pieces on their colours, placed in points from the top left and
    wrapped at the panel's width; what does not fit is counted in the note."""
    _blank(ax)
    char, line = _char_width(fig), SPAN_LINE  # points
    max_lines = max(2, int((height - 1.4) * 72 / line))
    placed, left_out = _wrap(s, _per_line(width, char), max_lines)
    cmap = _cmap()
    for row, col, text, value in placed:
        shade = None if value is None else scaled(value, s.lo, s.hi)
        on = "white" if shade is not None and shade > DARK else INK
        box = {"boxstyle": "square,pad=0.12", "facecolor": "none" if shade is None else cmap(shade),
               "edgecolor": "#d5d9e0", "linewidth": 0.4}  # fmt: skip
        piece = ax.annotate(_plain(text), xy=(0, 1), xycoords="axes fraction",
                            xytext=(col * char, -(row + 0.5) * line), textcoords="offset points",
                            va="center", family="monospace", fontsize=SPAN_FONT, bbox=box,
                            color=on)  # fmt: skip
        piece.set_in_layout(False)
    note = s.note
    if left_out:
        note = (f"{note}; " if note else "") + f"{left_out} more pieces (the page shows them all)"
    if not s.graded:  # the colours only tell neighbours apart: no scale to read
        _label(ax, s.legend, note)
        return
    _label(ax, "", note)
    _colorbar(fig, ax, s.lo, s.hi, s.legend, orientation="horizontal", fraction=0.05, pad=0.02,
              aspect=40, shrink=0.6)  # fmt: skip


def _per_line(width: float, char: float) -> int:
    """How many characters of `char` points fit on a line of a panel `width` inches wide."""
    return max(8, int((width - 0.7) * 72 / char))


def _char_width(fig: Figure) -> float:
    """The width of a character of the spans' monospace font as drawn, in points: the renderer
    rounds each advance to whole pixels, so it is not quite the font's 0.6 em."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(family="monospace", size=SPAN_FONT)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width, _, _ = renderer.get_text_width_height_descent("M" * 50, font, ismath=False)
    return width / 50 * 72 / fig.dpi


def _wrap(
    s: Spans, per_line: int, max_lines: int
) -> tuple[list[tuple[int, int, str, float | None]], int]:
    """Where each piece goes: (line, column, visible text, value), and how many did not fit."""
    placed: list[tuple[int, int, str, float | None]] = []
    row = col = 0
    for k, span in enumerate(s.spans):
        parts = span.text.split("\n")
        for n, part in enumerate(parts):
            text = visible(part) + ("↵" if n < len(parts) - 1 else "")
            while text:
                if col + len(text) > per_line and col > 0:
                    row, col = row + 1, 0
                if row >= max_lines:
                    return placed, len(s.spans) - k
                piece, text = text[:per_line], text[per_line:]
                placed.append((row, col, piece, span.value))
                col += len(piece)
            if n < len(parts) - 1:
                row, col = row + 1, 0
    return placed, 0


def _lines(ax: Axes, ln: Lines) -> None:
    for name, ys in ln.series.items():
        n = min(len(ln.x), len(ys))
        values = [math.nan if y is None else y for y in ys[:n]]
        ax.plot(ln.x[:n], values, label=_plain(name), linewidth=1.8, markersize=3,
                marker="o" if n <= 40 else None)  # fmt: skip
    if ln.log_x:
        ax.set_xscale("log", nonpositive="mask")
    if ln.log_y:
        ax.set_yscale("log", nonpositive="mask")
    ax.set_ylabel(_plain(ln.y_label), fontsize=9)
    _label(ax, ln.x_label, ln.note)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if len(ln.series) > 1:
        ax.legend(fontsize=8)


def _table(fig: Figure, ax: Axes, t: Table, height: float) -> None:
    from matplotlib.transforms import Bbox

    _blank(ax)
    cmap = _cmap()
    header = [_short(h, 40) for h in t.header]
    text: list[list[str]] = [header] if header else []
    faces: list[list[Any]] = [["#eef1f5"] * len(header)] if header else []
    dark: set[tuple[int, int]] = set()
    for row in t.rows[:MAX_TABLE_ROWS]:
        text.append([number(c) if _numeric(c) else _short(str(c), 40) for c in row])
        faces.append([])
        for c, cell in enumerate(row):
            shade = None
            if t.shade and _numeric(cell) and math.isfinite(cell):
                shade = scaled(cell, t.lo, t.hi)
            faces[-1].append("white" if shade is None else cmap(shade))
            if shade is not None and shade > DARK:
                dark.add((len(text) - 1, c))
    columns = max((len(r) for r in text), default=0) or 1  # matplotlib wants a full grid
    text = [r + [""] * (columns - len(r)) for r in text] or [[""]]
    faces = [f + ["white"] * (columns - len(f)) for f in faces] or [["white"]]
    # rows of a fixed height, from the top; the axes is the panel less its title and note
    share = min(1.0, len(text) * TABLE_ROW / max(height - 0.9, 0.5))
    table = ax.table(cellText=text, cellColours=faces, cellLoc="center",
                     bbox=Bbox.from_bounds(0, 1 - share, 1, share))  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    for (r, c), drawn in table.get_celld().items():
        drawn.set_edgecolor("#d5d9e0")
        if r == 0 and header:
            drawn.set_text_props(weight="bold")
        elif (r, c) in dark:
            drawn.get_text().set_color("white")
    note = t.note
    if len(t.rows) > MAX_TABLE_ROWS:
        note = (f"{note}; " if note else "") + f"first {MAX_TABLE_ROWS} of {len(t.rows)} rows"
    _label(ax, "", note)
    if t.shade:
        _colorbar(fig, ax, t.lo, t.hi, shrink=0.6)


def _numeric(cell: object) -> TypeGuard[float]:
    return isinstance(cell, int | float) and not isinstance(cell, bool)


def _blank(ax: Axes) -> None:
    """An axes with no ticks or frame that still shows its x label (the note)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
