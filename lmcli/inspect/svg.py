"""The drawing of each kind of panel: heatmaps, bars and lines as inline SVG, spans of text and
tables as HTML, with the colour scale and text helpers they (and pictures.py) share.

Every drawn number carries its value in `data-v` (6 significant digits; "masked" for a masked
cell), so that a test or a reader can check the picture against the numbers of `--json`.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass

from lmcli.inspect.panels import Bars, Heatmap, Lines, Spans, Table, scaled

# The colour scale, lo (white) to hi (dark blue): ColorBrewer's 9-class "Blues", which is also
# matplotlib's "Blues" colormap, so that the page and the pictures (pictures.py) agree.
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c",
         "#08306b")  # fmt: skip
# Line colours: matplotlib's default cycle (C0..C9), as in the pictures.
SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")  # fmt: skip
BAR = "#3a7fbd"
MAX_CELLS = 70_000  # a larger heatmap is cut to its top-left corner (a 256x256 map is ~6 MB)
TITLED_CELLS = 4_096  # up to here each cell has its own <title>; beyond, the script shows the tip
MAX_LABELS = 40  # axis labels beyond this many are thinned out
CHAR = 6.6  # px: the width of a character of the 11 px monospace font of the SVG text
SHOWN = {"\n": "↵", "\t": "→", "\r": "␍"}


def esc(text: object) -> str:
    """HTML-escaped text (for elements and quoted attributes), with no "http" left in it."""
    escaped = html.escape(str(text), quote=True)
    return re.sub(r"(?i)(h)(t)(tp)", lambda m: f"{m[1]}&#{ord(m[2])};{m[3]}", escaped)


def visible(text: str) -> str:
    """text with its invisible characters drawn: a newline as ↵, a tab as →, other control
    characters as \\xNN (spaces stay spaces)."""
    return "".join(
        SHOWN.get(c) or (f"\\x{ord(c):02x}" if c < " " or c == "\x7f" else c) for c in text
    )


def cell_text(text: str) -> str:
    """A token written in a heatmap cell: visible(text), and a space as ␣ (a cell has no
    quotes around it, so a space token would otherwise be an empty cell)."""
    return visible(text).replace(" ", "␣")


def value_attr(value: float | None) -> str:
    """What `data-v` holds: the value to 6 significant digits, or "masked" for None."""
    return "masked" if value is None else format(value, ".6g")


def number(value: float | int) -> str:
    """A value as the page prints it."""
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _rgb(hex_colour: str) -> tuple[int, ...]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _ramp(levels: int = 256) -> list[str]:
    colours = []
    for k in range(levels):
        t = k / (levels - 1) * (len(BLUES) - 1)
        i = min(int(t), len(BLUES) - 2)
        a, b = _rgb(BLUES[i]), _rgb(BLUES[i + 1])
        colours.append(
            "#" + "".join(f"{round(x + (y - x) * (t - i)):02x}" for x, y in zip(a, b, strict=True))
        )
    return colours


_RAMP = _ramp()


def colour(value: float, lo: float, hi: float) -> str:
    """The scale's colour of value (lo white, hi dark blue)."""
    return _RAMP[round(scaled(value, lo, hi) * (len(_RAMP) - 1))]


def ink(value: float, lo: float, hi: float) -> str:
    """A text colour that reads on colour(value)."""
    return "#ffffff" if scaled(value, lo, hi) > 0.55 else "#1d2330"


def _legend(lo: float, hi: float, what: str = "") -> str:
    text = f'<span class="what">{esc(what)}</span>' if what else ""
    return (
        f'<div class="legend"><span>{number(lo)}</span><span class="ramp"></span>'
        f"<span>{number(hi)}</span>{text}</div>"
    )


def _svg(width: float, height: float, inner: str, attrs: str = "") -> str:
    return (
        f'<div class="plot"><svg width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img"{attrs}>{inner}</svg></div>'
    )


def _label_step(count: int, size: float) -> int:
    """Show every step-th of count labels on cells of size px: at most MAX_LABELS, none cramped."""
    return max(1, math.ceil(count / MAX_LABELS), math.ceil(12 / max(size, 0.1)))


def _short(text: str, chars: int) -> str:
    shown = visible(text)
    return shown if len(shown) <= chars else shown[: max(1, chars - 1)] + "…"


@dataclass(frozen=True)
class _Grid:
    """Where a heatmap's cells lie: the first `rows` x `cols` cells, cw x ch px from (left, top)."""

    rows: int
    cols: int
    left: float
    top: float
    cw: float
    ch: float
    titled: bool  # each cell has its own <title>


def heatmap(h: Heatmap) -> tuple[str, bool]:
    """A heatmap as SVG with its legend, and whether it is too wide to share a row."""
    rows, cols = len(h.values), max((len(r) for r in h.values), default=0)
    kept_r, kept_c = rows, cols
    if rows * cols > MAX_CELLS:  # keep the top-left corner, in proportion
        f = math.sqrt(MAX_CELLS / (rows * cols))
        kept_r, kept_c = max(1, int(rows * f)), max(1, int(cols * f))
    if h.labels:
        longest = max((len(t) for r in h.labels for t in r), default=1)
        cw, ch = min(80.0, max(24.0, CHAR * longest + 8)), 18.0
    else:
        cw = ch = min(28.0, max(2.0, 440 / max(kept_r, kept_c, 1)))
    row_names = [visible(n) for n in _names(h.rows, kept_r)]
    col_names = [visible(n) for n in _names(h.cols, kept_c)]
    step_r, step_c = _label_step(kept_r, ch), _label_step(kept_c, cw)
    shown_r = [_short(n, 18) for n in row_names[::step_r]]
    shown_c = [_short(n, 18) for n in col_names[::step_c]]
    upright = all(len(n) * CHAR <= cw * step_c - 3 for n in shown_c)
    # the rows' name runs up beside them, or sits above them when they are too few for it
    beside = bool(h.row_axis) and ch * kept_r >= CHAR * len(h.row_axis) + 8
    left = CHAR * max(map(len, shown_r), default=1) + 10 + 16 * beside
    if h.row_axis and not beside:
        left = max(left, CHAR * len(h.row_axis) + 8)
    top = (14 if upright else CHAR * max(map(len, shown_c), default=1)) + 8 + 16 * bool(h.col_axis)
    grid = _Grid(kept_r, kept_c, left, top, cw, ch, kept_r * kept_c <= TITLED_CELLS)
    parts = [_cells(h, grid, row_names, col_names)]
    for i, name in zip(range(0, kept_r, step_r), shown_r, strict=True):
        parts.append(
            f'<text x="{left - 4:.1f}" y="{top + (i + 0.5) * ch:.1f}" text-anchor="end" '
            f'dominant-baseline="central">{esc(name)}</text>'
        )
    for j, name in zip(range(0, kept_c, step_c), shown_c, strict=True):
        x = left + (j + 0.5) * cw
        if upright:
            place = f'x="{x:.1f}" y="{top - 5:.1f}" text-anchor="middle"'
        else:
            place = (
                f'transform="translate({x:.1f},{top - 4:.1f}) rotate(-90)" '
                'dominant-baseline="central"'
            )
        parts.append(f"<text {place}>{esc(name)}</text>")
    grid_w, grid_h = cw * kept_c, ch * kept_r
    if beside:
        parts.append(
            f'<text class="axis" transform="translate(10,{top + grid_h / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle" dominant-baseline="central">{esc(h.row_axis)}</text>'
        )
    elif h.row_axis:
        parts.append(
            f'<text class="axis" x="{left - 4:.1f}" y="{top - 6:.1f}" text-anchor="end">'
            f"{esc(h.row_axis)}</text>"
        )
    if h.col_axis:
        parts.append(
            f'<text class="axis" x="{left + grid_w / 2:.1f}" y="12" text-anchor="middle">'
            f"{esc(h.col_axis)}</text>"
        )
    attrs = ""
    if not grid.titled:  # the script's tooltip reads the labels from here
        attrs = (
            f' data-rows="{esc(json.dumps(row_names))}" data-cols="{esc(json.dumps(col_names))}"'
        )
    width = left + grid_w + 8
    body = _svg(width, top + grid_h + 4, "".join(parts), attrs) + _legend(h.lo, h.hi)
    if (kept_r, kept_c) != (rows, cols):
        body += (
            f'<p class="note">showing the first {kept_r} of {rows} rows and {kept_c} of {cols} '
            f"columns (the page draws at most {MAX_CELLS:,} cells)</p>"
        )
    return body, width > 560  # wider than a card of the grid: a row of its own


def _names(names: list[str], count: int) -> list[str]:
    """count labels: the given ones, then numbers for any missing."""
    return [*names[:count], *map(str, range(len(names), count))]


def _cells(h: Heatmap, grid: _Grid, row_names: list[str], col_names: list[str]) -> str:
    """One rect per cell, in cell units (x = column, y = row) scaled to the grid's pixels; then
    the cells' text labels, in pixels."""
    rects, texts = [], []
    for i in range(grid.rows):
        row = h.values[i]
        for j in range(grid.cols):
            v = row[j] if j < len(row) else None
            if v is None or math.isnan(v):  # hatched by the page's CSS
                paint, on = 'class="masked"', "#1d2330"
            else:
                paint, on = f'fill="{colour(v, h.lo, h.hi)}"', ink(v, h.lo, h.hi)
            cell = f'<rect x="{j}" y="{i}" width="1" height="1" {paint} data-row="{i}" '
            cell += f'data-col="{j}" data-v="{value_attr(v)}"'
            if grid.titled:
                shown = "masked" if v is None else number(v)
                tip = f"{esc(row_names[i])} → {esc(col_names[j])}: {shown}"
                rects.append(f"{cell}><title>{tip}</title></rect>")
            else:
                rects.append(cell + "/>")
            text = h.labels[i][j] if h.labels and i < len(h.labels) and j < len(h.labels[i]) else ""
            if text and grid.cw >= 14:
                x, y = grid.left + (j + 0.5) * grid.cw, grid.top + (i + 0.5) * grid.ch
                texts.append(
                    f'<text class="cell" x="{x:.1f}" y="{y:.1f}" text-anchor="middle" '
                    f'dominant-baseline="central" style="fill:{on}">'
                    f"{esc(_short(cell_text(text), int((grid.cw - 4) / CHAR)))}</text>"
                )
    group = (
        f'<g transform="translate({grid.left:.1f},{grid.top:.1f}) '
        f'scale({grid.cw:.3f},{grid.ch:.3f})" shape-rendering="crispEdges">'
    )
    return group + "".join(rects) + "</g>" + "".join(texts)


def bars(b: Bars) -> str:
    """Horizontal bars as SVG, those after `cut` faded."""
    names = [_short(n, 24) for n in b.labels]
    left = CHAR * max((len(n) for n in names), default=1) + 10
    width, bh, gap, top = 300.0, 18.0, 5.0, 6.0
    cut = b.cut if b.cut is not None and 0 <= b.cut <= len(b.values) else None
    parts: list[str] = []
    y = top
    for i, (name, v) in enumerate(zip(names, b.values, strict=False)):
        if i == cut:
            y += _cut_line(parts, left, y, width, b.cut_label)
        w = max(0.5, scaled(v, b.lo, b.hi) * width)
        faded = ' opacity="0.35"' if cut is not None and i >= cut else ""
        parts.append(
            f'<text x="{left - 6:.1f}" y="{y + bh / 2:.1f}" text-anchor="end" '
            f'dominant-baseline="central">{esc(name)}</text>'
            f'<rect x="{left:.1f}" y="{y:.1f}" width="{w:.1f}" height="{bh:.0f}" rx="2" '
            f'fill="{BAR}"{faded} data-v="{value_attr(v)}"><title>{esc(visible(b.labels[i]))}: '
            f"{number(v)}</title></rect>"
            f'<text x="{left + w + 5:.1f}" y="{y + bh / 2:.1f}" '
            f'dominant-baseline="central">{number(v)}</text>'
        )
        y += bh + gap
    if cut == len(b.values):
        y += _cut_line(parts, left, y, width, b.cut_label)
    parts.append(
        f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top - 2:.1f}" y2="{y:.1f}" '
        f'stroke="#9aa3b2"/><text class="axis" x="{left:.1f}" y="{y + 12:.1f}" '
        f'text-anchor="middle">{number(b.lo)}</text><text class="axis" '
        f'x="{left + width:.1f}" y="{y + 12:.1f}" text-anchor="middle">{number(b.hi)}'
        "</text>"
    )
    return _svg(left + width + 60, y + 18, "".join(parts))


def _cut_line(parts: list[str], left: float, y: float, width: float, label: str) -> float:
    """The dashed line after the kept bars, with its label; returns the height it takes."""
    parts.append(
        f'<line class="cut" x1="2" x2="{left + width + 56:.1f}" y1="{y + 4:.1f}" '
        f'y2="{y + 4:.1f}" stroke="#c0392b" stroke-dasharray="5 3"/>'
        f'<text class="axis cut-label" x="{left + width + 56:.1f}" y="{y + 14:.1f}" '
        f'text-anchor="end">{esc(label)}</text>'
    )
    return 20.0


def spans(s: Spans) -> str:
    """Text pieces, each on the colour of its value, with a legend."""
    pieces = []
    for span in s.spans:
        text = "↵\n".join(esc(visible(part)) for part in span.text.split("\n"))
        tip = span.tip or ("" if span.value is None else number(span.value))
        style = ""
        if span.value is not None:
            style = (
                f' style="background:{colour(span.value, s.lo, s.hi)};'
                f'color:{ink(span.value, s.lo, s.hi)}"'
            )
        data_v = "none" if span.value is None else value_attr(span.value)
        pieces.append(
            f'<span class="tok"{style} title="{esc(tip)}" data-v="{data_v}">{text}</span>'
        )
    key = _legend(s.lo, s.hi, s.legend) if s.graded else f'<p class="note">{esc(s.legend)}</p>'
    return f'<div class="spans">{"".join(pieces)}</div>' + key


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round numbers from lo to hi, about count of them."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks on a log10 axis from 10**lo to 10**hi, as exponents: decades, or 1-2-5 within few."""
    decades = [float(k) for k in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    if len(decades) >= 3:
        return decades
    found = [
        math.log10(m * 10.0**k)
        for k in range(math.floor(lo) - 1, math.ceil(hi) + 1)
        for m in (1, 2, 5)
    ]
    return [t for t in found if lo - 1e-9 <= t <= hi + 1e-9]


def _domain(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.5 or 1.0
        return lo - pad, hi + pad
    return lo, hi


@dataclass(frozen=True)
class _Frame:
    """A chart's data ranges (x0..x1, y0..y1) and the pixel box they map to."""

    x0: float
    x1: float
    y0: float
    y1: float
    left: float = 58.0
    top: float = 10.0
    width: float = 448.0
    height: float = 228.0

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.width

    def py(self, y: float) -> float:
        return self.top + (self.y1 - y) / (self.y1 - self.y0) * self.height


def lines(ln: Lines) -> str:
    """Line series on shared axes as SVG, with a key when there are several."""
    width, height = 520.0, 280.0
    xs: list[float | None] = (
        [math.log10(x) if x > 0 else None for x in ln.x] if ln.log_x else [*ln.x]
    )
    series = {
        name: [math.log10(y) if y is not None and y > 0 else None for y in ys] if ln.log_y else ys
        for name, ys in ln.series.items()
    }
    points = [
        (x, y)
        for ys in series.values()
        for x, y in zip(xs, ys, strict=False)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    if not points:
        return _svg(width, 40, '<text class="axis" x="10" y="24">no data to draw</text>')
    x0, x1 = _domain([p[0] for p in points])
    y0, y1 = _domain([p[1] for p in points])
    y_ticks = _log_ticks(y0, y1) if ln.log_y else _ticks(y0, y1)
    f = _Frame(x0, x1, min(y0, y_ticks[0]), max(y1, y_ticks[-1]))
    bottom, right = f.top + f.height, f.left + f.width
    parts = []
    for t in y_ticks:
        parts.append(
            f'<line x1="{f.left:.1f}" x2="{right:.1f}" y1="{f.py(t):.1f}" y2="{f.py(t):.1f}" '
            f'stroke="#e8eaef"/><text class="axis" x="{f.left - 5:.1f}" y="{f.py(t):.1f}" '
            f'text-anchor="end" dominant-baseline="central">{number(10**t if ln.log_y else t)}'
            "</text>"
        )
    for t in _log_ticks(x0, x1) if ln.log_x else _ticks(x0, x1):
        shown = number(10**t) if ln.log_x else number(t)
        parts.append(
            f'<line x1="{f.px(t):.1f}" x2="{f.px(t):.1f}" y1="{bottom:.1f}" y2="{bottom + 4:.1f}" '
            f'stroke="#9aa3b2"/><text class="axis" x="{f.px(t):.1f}" y="{bottom + 16:.1f}" '
            f'text-anchor="middle">{shown}</text>'
        )
    parts.append(
        f'<path d="M{f.left:.1f} {f.top:.1f}V{bottom:.1f}H{right:.1f}" fill="none" '
        'stroke="#9aa3b2"/>'
    )
    for k, (name, ys) in enumerate(series.items()):
        parts.append(_curve(f, name, xs, ys, SERIES[k % len(SERIES)], ln.log_y))
    parts.append(
        f'<text class="axis" x="{f.left + f.width / 2:.1f}" y="{height - 6:.1f}" '
        f'text-anchor="middle">{esc(ln.x_label)}{" (log scale)" if ln.log_x else ""}</text>'
        f'<text class="axis" transform="translate(12,{f.top + f.height / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" dominant-baseline="central">{esc(ln.y_label)}'
        f"{' (log scale)' if ln.log_y else ''}</text>"
    )
    keys = "".join(
        f'<span><i class="swatch" style="background:{SERIES[k % len(SERIES)]}"></i>'
        f"{esc(name)}</span>"
        for k, name in enumerate(ln.series)
    )
    legend = f'<div class="keys">{keys}</div>' if len(ln.series) > 1 else ""
    return _svg(width, height, "".join(parts)) + legend


def _curve(
    f: _Frame,
    name: str,
    xs: list[float | None],
    ys: list[float | None],
    stroke: str,
    log_y: bool = False,
) -> str:
    """One series as a path with a gap at each missing point, and dots when there are few."""
    path, dots, pen_down = [], [], False
    for x, y in zip(xs, ys, strict=False):
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            pen_down = False
            continue
        path.append(f"{'L' if pen_down else 'M'}{f.px(x):.1f} {f.py(y):.1f}")
        dots.append(
            f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.5" '
            f'data-v="{value_attr(10**y if log_y else y)}"/>'
        )
        pen_down = True
    return (
        f'<g data-series="{esc(name)}" fill="{stroke}"><title>{esc(name)}</title>'
        f'<path d="{"".join(path)}" fill="none" stroke="{stroke}" stroke-width="2"/>'
        + ("".join(dots) if len(dots) <= 40 else "")
        + "</g>"
    )


def table(t: Table) -> str:
    """An HTML table, its numbers shaded on the scale if `t.shade`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in t.header)
    rows = []
    for row in t.rows:
        cells = []
        for cell in row:
            if isinstance(cell, int | float) and not isinstance(cell, bool):
                style = ""
                if t.shade and math.isfinite(cell):
                    style = (
                        f' style="background:{colour(cell, t.lo, t.hi)};'
                        f'color:{ink(cell, t.lo, t.hi)}"'
                    )
                cells.append(
                    f'<td class="num"{style} data-v="{value_attr(cell)}">{number(cell)}</td>'
                )
            else:
                cells.append(f"<td>{esc(visible(str(cell)))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    start = f'<div class="plot"><table class="table"><thead><tr>{head}</tr></thead><tbody>'
    return (
        start + "".join(rows) + "</tbody></table></div>" + (_legend(t.lo, t.hi) if t.shade else "")
    )
