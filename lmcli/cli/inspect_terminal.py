"""`lmcli inspect` in the terminal: the five panel kinds drawn with rich.

Colours follow one fixed scale, light (the panel's lo) to dark blue (its hi), with a legend.
Without colour (NO_COLOR, or output to a file) the same scale is a ramp of shade characters, and
text spans are bracketed with a digit 0-9 for their value.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from lmcli.cli.render import stdout
from lmcli.inspect.panels import Bars, Heatmap, Lines, Panel, Spans, Table, ViewResult, scaled

LIGHT, DARK = (247, 251, 255), (8, 48, 107)  # the scale's two ends (a single-hue blue)
RAMP = " ░▒▓█"
DIGITS = "0123456789"
BAR = 24  # characters of a full bar
LABEL = 14  # characters of a heatmap row label
NUMBERED = 16  # a heatmap of at most this many columns shows its numbers


def colour(x: float) -> str:
    """The scale's colour at x in 0..1, as rich's rgb()."""
    r, g, b = (round(lo + (hi - lo) * x) for lo, hi in zip(LIGHT, DARK, strict=True))
    return f"rgb({r},{g},{b})"


def ink(x: float) -> str:
    """Text colour readable on colour(x)."""
    return "white" if x > 0.55 else "black"


def visible(text: str) -> str:
    """Whitespace a reader must see: newlines and tabs as symbols."""
    return text.replace("\n", "↵").replace("\t", "→").replace("\r", "␍")


def legend(lo: float, hi: float, plain: bool, what: str = "") -> Text:
    out = Text(f"  {lo:.3g} ")
    for i in range(9):
        x = i / 8
        if plain:
            out.append(RAMP[min(len(RAMP) - 1, round(x * (len(RAMP) - 1)))])
        else:
            out.append("  ", style=f"on {colour(x)}")
    out.append(f" {hi:.3g}" + (f"  {what}" if what else ""))
    return out


def heatmap(console: Console, panel: Heatmap, plain: bool) -> None:
    if panel.labels is not None:
        return labelled_heatmap(console, panel, plain)
    if len(panel.cols) <= NUMBERED:
        return numbered_heatmap(console, panel, plain)
    room = max(8, (console.width - LABEL - 2) // 2)
    start = max(0, len(panel.cols) - room)
    if start:
        console.print(f"  (the last {room} of {len(panel.cols)} columns)", style="dim")
    for label, row in zip(panel.rows, panel.values, strict=True):
        line = Text(f"{label[:LABEL]:>{LABEL}} ")
        for v in row[start:]:
            if v is None:
                line.append("··", style="dim")
            elif plain:
                x = scaled(v, panel.lo, panel.hi)
                line.append(RAMP[min(len(RAMP) - 1, round(x * (len(RAMP) - 1)))] * 2)
            else:
                line.append("  ", style=f"on {colour(scaled(v, panel.lo, panel.hi))}")
        console.print(line, soft_wrap=True)
    axes = f"rows: {panel.row_axis}, columns: {panel.col_axis}" if panel.row_axis else ""
    console.print(
        legend(panel.lo, panel.hi, plain, axes + ("; ·· masked" if _masked(panel) else ""))
    )
    return None


def _masked(panel: Heatmap) -> bool:
    return any(v is None for row in panel.values for v in row)


def numbered_heatmap(console: Console, panel: Heatmap, plain: bool) -> None:
    """A small grid (heads x layers) with its numbers in the cells."""
    table = RichTable(show_edge=False, pad_edge=False)
    table.add_column(panel.row_axis)
    for col in panel.cols:
        table.add_column(col, justify="right", no_wrap=True)
    for label, row in zip(panel.rows, panel.values, strict=True):
        cells = []
        for v in row:
            if v is None:
                cells.append(Text("·", style="dim"))
                continue
            x = scaled(v, panel.lo, panel.hi)
            cells.append(Text(f"{v:.2f}", style="" if plain else f"{ink(x)} on {colour(x)}"))
        table.add_row(label, *cells)
    console.print(table)
    if not plain:
        console.print(legend(panel.lo, panel.hi, plain))


def labelled_heatmap(console: Console, panel: Heatmap, plain: bool) -> None:
    assert panel.labels is not None
    room = max(3, (console.width - LABEL) // 9)
    start = max(0, len(panel.cols) - room)
    table = RichTable(show_edge=False, pad_edge=False)
    table.add_column(panel.row_axis)
    for col in panel.cols[start:]:
        table.add_column(visible(col)[:8], no_wrap=True)
    for label, row, words in zip(panel.rows, panel.values, panel.labels, strict=True):
        cells = []
        for v, word in zip(row[start:], words[start:], strict=True):
            x = scaled(v or 0.0, panel.lo, panel.hi)
            shown = visible(word).replace(" ", "␣")[:6]
            cells.append(
                Text(
                    f"{shown}{DIGITS[min(9, int(x * 10))]}" if plain else shown,
                    style="" if plain else f"{ink(x)} on {colour(x)}",
                )
            )
        table.add_row(label, *cells)
    console.print(table)
    console.print(legend(panel.lo, panel.hi, plain, "probability of the top token"))


def bars(console: Console, panels: list[Bars], plain: bool) -> None:
    """One table: a row per label, a column per panel (the temperatures side by side)."""
    table = RichTable(show_edge=False)
    table.add_column("")
    for p in panels:
        table.add_column(p.title, no_wrap=True)
    first = panels[0]
    for i, label in enumerate(first.labels):
        cells: list[Text | str] = [Text(visible(label))]
        for p in panels:
            x = scaled(p.values[i], p.lo, p.hi)
            full = round(x * BAR)
            kept = p.cut is None or i < p.cut
            bar = Text(
                "█" * full if kept else "░" * full,
                style="" if plain else ("blue" if kept else "dim"),
            )
            bar.append(f" {p.values[i]:.3f}")
            cells.append(bar)
        table.add_row(*cells)
    console.print(table)
    for p in panels:
        extra = f"; {p.cut_label} (after bar {p.cut})" if p.cut is not None and p.cut_label else ""
        if p.note or extra:
            console.print(f"  {p.title}: {p.note}{extra}", style="dim")


def spans(console: Console, panel: Spans, plain: bool) -> None:
    out = Text()
    for span in panel.spans:
        shown = visible(span.text)
        if span.value is None:
            out.append(f"[{shown}]" if plain else shown, style="" if plain else "dim")
        elif plain:
            x = scaled(span.value, panel.lo, panel.hi)
            out.append(f"[{shown}]" + (DIGITS[min(9, int(x * 10))] if panel.graded else ""))
        else:
            x = scaled(span.value, panel.lo, panel.hi)
            out.append(shown, style=f"{ink(x)} on {colour(x)}")
        if "\n" in span.text:
            out.append("\n")
    console.print(out, soft_wrap=True)
    if panel.graded:
        console.print(legend(panel.lo, panel.hi, plain, panel.legend))
    else:
        console.print(f"  {panel.legend}", style="dim", markup=False)


def lines(console: Console, panel: Lines) -> None:
    table = RichTable(show_edge=False)
    table.add_column(panel.x_label or "x")
    for name in panel.series:
        table.add_column(name, justify="right")
    for i, x in enumerate(panel.x):
        values = [s[i] for s in panel.series.values()]
        table.add_row(f"{x:g}", *("-" if v is None else f"{v:.4g}" for v in values))
    console.print(table)
    if panel.y_label:
        console.print(f"  values: {panel.y_label}", style="dim")


def table(console: Console, panel: Table, plain: bool) -> None:
    out = RichTable(show_edge=False)
    for name in panel.header:
        out.add_column(name)
    for row in panel.rows:
        cells = []
        for cell in row:
            if isinstance(cell, float) and panel.shade and not plain:
                x = scaled(cell, panel.lo, panel.hi)
                cells.append(Text(f"{cell:.3f}", style=f"{ink(x)} on {colour(x)}"))
            else:
                cells.append(Text(visible(str(cell))))
        out.add_row(*cells)
    console.print(out)


def show(result: ViewResult) -> None:
    """Draw one view: its title, what it shows, its panels, its notes."""
    console = stdout()
    plain = console.no_color or console.color_system is None
    console.rule(Text(result.title, style="bold"), align="left")
    console.print(result.explains, style="italic", markup=False)
    panels: list[Panel] = list(result.panels)
    i = 0
    while i < len(panels):
        panel = panels[i]
        if isinstance(panel, Bars):  # consecutive bars with the same labels: one table
            group = [panel]
            while i + 1 < len(panels) and isinstance(panels[i + 1], Bars):
                following = panels[i + 1]
                assert isinstance(following, Bars)
                if following.labels != panel.labels:
                    break
                group.append(following)
                i += 1
            console.print()
            bars(console, group, plain)
        else:
            console.print()
            console.print(Text(panel.title, style="bold"))
            if isinstance(panel, Heatmap):
                heatmap(console, panel, plain)
            elif isinstance(panel, Spans):
                spans(console, panel, plain)
            elif isinstance(panel, Lines):
                lines(console, panel)
            else:
                table(console, panel, plain)
            if panel.note:
                console.print(f"  {panel.note}", style="dim", markup=False)
        i += 1
    for line in result.notes:
        console.print(f"note: {line}", style="yellow", markup=False)
    console.print()
