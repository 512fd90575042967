"""The HTML page: every view's panels (drawn by svg.py) in one self-contained file.

The page holds its CSS, its SVG and a small script inline and names no URL at all (inline SVG in
HTML5 needs no xmlns; an "http" in the text itself is written as a character reference): it
opens offline, from disk, and can be mailed as one file.
"""

from __future__ import annotations

import re
from pathlib import Path

from lmcli import __version__
from lmcli.files import atomic_write_bytes
from lmcli.inspect.panels import Bars, Heatmap, Lines, Panel, Spans, ViewResult, kind
from lmcli.inspect.svg import BLUES, bars, esc, heatmap, lines, spans, table


def write_page(path: Path, results: list[ViewResult], title: str, intro: str) -> None:
    """Write the page of `results` to `path` (atomically: a crash leaves no half page)."""
    nav = "".join(f'<a href="#view-{_slug(r.view)}">{esc(r.title)}</a>' for r in results)
    paragraphs = "".join(f'<p class="intro">{esc(p)}</p>' for p in intro.split("\n\n") if p)
    page = _TEMPLATE.format(
        title=esc(title),
        intro=paragraphs,
        nav=nav,
        css=_CSS,
        script=_SCRIPT,
        version=__version__,
        sections="\n".join(_section(r) for r in results),
    )
    atomic_write_bytes(path, page.encode("utf-8"))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _section(result: ViewResult) -> str:
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    panels = "\n".join(_figure(p) for p in result.panels)
    return (
        f'<section class="view" id="view-{_slug(result.view)}" data-view="{esc(result.view)}">'
        f'<h2>{esc(result.title)}</h2><p class="explains">{esc(result.explains)}</p>'
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + f'<div class="panels">{panels}</div></section>'
    )


def _figure(panel: Panel) -> str:
    if isinstance(panel, Heatmap):
        body, wide = heatmap(panel)
    elif isinstance(panel, Bars):
        body, wide = bars(panel), False
    elif isinstance(panel, Spans):
        body, wide = spans(panel), True
    elif isinstance(panel, Lines):
        body, wide = lines(panel), False
    else:
        body, wide = table(panel), len(panel.header) > 6
    note = f'<p class="note">{esc(panel.note)}</p>' if panel.note else ""
    return (
        f'<figure class="panel{" wide" if wide else ""}" data-kind="{kind(panel)}">'
        f"<figcaption>{esc(panel.title)}</figcaption>{body}{note}</figure>"
    )


_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #e2e5eb; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
.intro { color: var(--muted); max-width: 80ch; margin: .2rem 0; }
nav { display: flex; flex-wrap: wrap; gap: 6px; margin: 14px 0 0; }
nav a { text-decoration: none; color: #174a7c; background: #e3ecf6; padding: 2px 11px;
  border-radius: 999px; font-size: .85rem; }
section.view { margin-top: 30px; }
section.view h2 { font-size: 1.3rem; margin: 0 0 .15rem; }
.explains { margin: 0 0 .6rem; color: var(--muted); max-width: 90ch; }
.notes { margin: 0 0 .7rem; padding-left: 1.2rem; font-size: .9rem; color: #8a5300; }
.panels { display: grid; gap: 16px;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 540px), 1fr)); }
.panel { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; min-width: 0; }
.panel.wide { grid-column: 1 / -1; }
figcaption { font-weight: 600; margin-bottom: 8px; }
.plot { overflow-x: auto; }
.plot svg { display: block; }
svg text { font: 11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; fill: #2b3140;
  white-space: pre; }
svg text.cell { font-size: 10px; }
svg rect.masked { fill: url(#lmcli-masked) #eeeeee; }
svg text.axis { font-family: system-ui, sans-serif; fill: var(--muted); }
svg text.cut-label { fill: #c0392b; }
svg rect[data-v]:hover { stroke: #e4572e; stroke-width: 1.5px; vector-effect: non-scaling-stroke; }
.note { margin: 6px 0 0; font-size: .85rem; color: var(--muted); }
.legend, .keys { display: flex; align-items: center; gap: 6px 12px; flex-wrap: wrap;
  font-size: .8rem; color: var(--muted); margin-top: 8px; }
.legend { gap: 6px; }
.ramp { width: 160px; height: 10px; border: 1px solid var(--line); border-radius: 2px;
  background: linear-gradient(to right, RAMP); }
.swatch { display: inline-block; width: 14px; height: 3px; vertical-align: middle;
  margin-right: 5px; }
.spans { font: 13px/1.95 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.tok { border-radius: 3px; box-shadow: inset 0 0 0 .5px rgba(0, 0, 0, .15); }
table.table { border-collapse: collapse; font-size: .85rem; }
.table th, .table td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; }
.table td.num { text-align: right; font-variant-numeric: tabular-nums; }
#tip { position: fixed; pointer-events: none; background: var(--ink); color: #fff; z-index: 9;
  font: 12px ui-monospace, monospace; padding: 3px 7px; border-radius: 4px; white-space: pre; }
footer { margin-top: 40px; color: var(--muted); font-size: .8rem; }
"""

# The tooltip of a large heatmap (whose cells have no <title>), and the proof that the page ran.
_SCRIPT = """
(function () {
  const tip = document.getElementById("tip"), names = new WeakMap();
  document.addEventListener("mouseover", (e) => {
    const cell = e.target.closest ? e.target.closest("svg[data-rows] rect[data-v]") : null;
    if (!cell) { tip.hidden = true; return; }
    const svg = cell.ownerSVGElement;
    if (!names.has(svg)) {
      names.set(svg, [JSON.parse(svg.dataset.rows), JSON.parse(svg.dataset.cols)]);
    }
    const [rows, cols] = names.get(svg), d = cell.dataset;
    tip.textContent = rows[d.row] + " → " + cols[d.col] + ": " + d.v;
    tip.hidden = false;
  });
  document.addEventListener("mousemove", (e) => {
    tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
  });
  window.addEventListener("load", () => {
    document.body.dataset.rendered = String(document.querySelectorAll("section.view").length);
  });
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lmcli {version}">
<title>{title}</title><style>{css}</style></head>
<body><svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>
<pattern id="lmcli-masked" width="1" height="1" patternContentUnits="objectBoundingBox">
<rect width="1" height="1" fill="#eeeeee"/><path d="M0 1L1 0" stroke="#c4c8d0" stroke-width="0.1"/>
</pattern></defs></svg>
<main><header><h1>{title}</h1>{intro}<nav>{nav}</nav></header>
{sections}
<footer>written by lmcli {version}</footer></main>
<div id="tip" hidden></div><script>{script}</script></body></html>
"""
_CSS = _CSS.replace("RAMP", ", ".join(BLUES))
