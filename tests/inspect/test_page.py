"""The HTML page: self-contained (no URL), one section per view, every drawn number carried in
`data-v`, all text escaped; and, where chromium is installed, the page run in a real browser."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

from lmcli.inspect.page import write_page
from lmcli.inspect.panels import Heatmap, ViewResult
from lmcli.inspect.svg import MAX_CELLS, TITLED_CELLS, visible
from tests.inspect.synthetic import BARS, LINES, SPANS, TABLE, attention, views


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], section: int, figure: int) -> None:
        self.tag, self.attrs, self.section, self.figure = tag, attrs, section, figure
        self.text = ""


class Page(HTMLParser):
    """Every element of a page with its attributes, its text, and which section and figure
    (panel) it is in."""

    VOID: ClassVar = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.section = self.figure = -1
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.section += 1
        if tag == "figure":
            self.figure += 1
        element = Element(tag, {k: v or "" for k, v in attrs}, self.section, self.figure)
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.text += data

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


@pytest.fixture
def written(tmp_path: Path) -> tuple[str, Page]:
    path = tmp_path / "inspect.html"
    write_page(path, views(), "Inspecting <run>", "What the model does.\n\nSecond paragraph.")
    source = path.read_text(encoding="utf-8")
    return source, Page(source)


def heatmap_cells(page: Page, figure: int) -> dict[tuple[int, int], Element]:
    return {
        (int(e.attrs["data-row"]), int(e.attrs["data-col"])): e
        for e in page.find("rect")
        if e.figure == figure and "data-row" in e.attrs
    }


def test_the_page_names_no_url_and_has_one_section_per_view(written: tuple[str, Page]) -> None:
    source, page = written
    assert "http" not in source.lower()
    assert "xmlns" not in source
    sections = page.find("section")
    assert [s.attrs["data-view"] for s in sections] == [v.view for v in views()]
    assert [s.attrs["id"] for s in sections] == [f"view-{v.view}" for v in views()]
    assert [h.text for h in page.find("h2")] == [v.title for v in views()]
    explains = [e for e in page.find("p") if e.attrs.get("class") == "explains"]
    assert [p.text for p in explains] == [v.explains for v in views()]
    assert "the prompt was cut to its last 6 tokens" in page.find("ul")[0].text
    assert "Https links stay text" in page.find("ul")[0].text
    assert [f.attrs["data-kind"] for f in page.find("figure")] == [
        "heatmap", "heatmap", "bars", "spans", "lines", "table",
    ]  # fmt: skip
    assert page.find("title")[0].text == "Inspecting <run>"
    assert [s.section for s in page.find("svg") if s.section >= 0] == [0, 0, 1, 2]


def test_every_heatmap_cell_carries_its_value(written: tuple[str, Page]) -> None:
    _, page = written
    for figure, heatmap in enumerate(views()[0].panels):
        assert isinstance(heatmap, Heatmap)
        cells = heatmap_cells(page, figure)
        assert len(cells) == len(heatmap.rows) * len(heatmap.cols)
        for (i, j), cell in cells.items():
            value = heatmap.values[i][j]
            if value is None:
                assert cell.attrs["data-v"] == "masked"
                assert cell.attrs["class"] == "masked" and "fill" not in cell.attrs
                assert cell.text.endswith(": masked")
            else:
                assert cell.attrs["data-v"] == format(value, ".6g")
                assert math.isclose(float(cell.attrs["data-v"]), value, rel_tol=1e-5)
            assert cell.text.startswith(
                f"{visible(heatmap.rows[i])} → {visible(heatmap.cols[j])}: "
            )
    masked = [c for c in heatmap_cells(page, 0).values() if c.attrs["data-v"] == "masked"]
    assert len(masked) == 6 * 5 // 2  # above the diagonal of the 6 x 6 causal map


def test_heatmap_cell_labels_and_axes_are_drawn_visibly(written: tuple[str, Page]) -> None:
    _, page = written
    cell_texts = [e.text for e in page.find("text") if e.attrs.get("class") == "cell"]
    assert "t01" in cell_texts and "↵" in cell_texts  # a newline token shows as ↵
    assert "␣" in cell_texts and " " not in cell_texts  # a space token shows as ␣
    labels = {e.text for e in page.find("text") if e.figure == 0}
    assert {"<s>", "a&b", " to", "↵", "→", "$x$", "query", "key"} <= labels


def test_bars_carry_values_and_fade_after_the_cut(written: tuple[str, Page]) -> None:
    _, page = written
    bars = [e for e in page.find("rect") if e.figure == 2]
    assert [float(b.attrs["data-v"]) for b in bars] == BARS.values
    assert [b.attrs.get("opacity") for b in bars] == [None] * 3 + ["0.35"] * 3
    assert len([e for e in page.find("line") if e.attrs.get("class") == "cut"]) == 1
    assert BARS.cut_label in {e.text for e in page.find("text")}


def test_spans_are_escaped_and_show_their_whitespace(written: tuple[str, Page]) -> None:
    source, page = written
    assert source.count("<script") == 1  # the page's own script, not the text's
    assert "<tip>" not in source
    pieces = page.find("span", **{"class": "tok"})
    shown = [s.text for s in pieces]
    assert shown == [
        "Hello", " world↵\n", "→indented", "🙂", "<script>alert('x')</script>",
        " see https://example.org",
    ]  # fmt: skip
    assert [p.attrs["title"] for p in pieces][4] == '"quoted" <tip> & more'
    assert [p.attrs["data-v"] for p in pieces] == ["0.5", "5.5", "none", "3", "1", "2"]
    assert "background" not in pieces[2].attrs.get("style", "")  # None: no colour
    assert all("background:#" in p.attrs["style"] for p in pieces if p.attrs["data-v"] != "none")
    assert SPANS.legend in source
    assert "white-space: pre-wrap" in source


def test_lines_have_log_ticks_a_gap_and_a_legend(written: tuple[str, Page]) -> None:
    _, page = written
    figure = 4
    texts = {e.text for e in page.find("text") if e.figure == figure}
    assert {"1", "10", "100", "1000", "distance (log scale)", "KL (bits)"} <= texts
    series = {g.attrs["data-series"]: g for g in page.find("g") if "data-series" in g.attrs}
    paths = {e.attrs["d"] for e in page.find("path") if e.figure == figure and "d" in e.attrs}
    train = next(d for d in paths if d.count("M") == 2)  # the None at x=100 breaks the line
    assert train.count("L") == 1
    assert set(series) == set(LINES.series)
    dots = [float(e.attrs["data-v"]) for e in page.find("circle") if e.figure == figure]
    assert dots == [3.0, 2.0, 1.0, 3.2, 2.5, 2.0, 1.6]
    assert {"train", "val"} <= {e.text for e in page.find("span") if e.figure == figure}


def test_a_shaded_table_colours_its_numbers(written: tuple[str, Page]) -> None:
    _, page = written
    cells = [e for e in page.find("td") if e.figure == 5]
    assert [c.text for c in cells] == ["embed", "0.5", "a<b", "layer 0", "1.25", "tab→here",
                                       "final", "2", "True"]  # fmt: skip
    shaded = [c for c in cells if "data-v" in c.attrs]
    assert [c.attrs["data-v"] for c in shaded] == ["0.5", "1.25", "2"]
    assert all(c.attrs["style"].startswith("background:#") for c in shaded)
    assert [h.text for h in page.find("th")] == TABLE.header


def test_a_large_heatmap_stays_a_reasonable_size(tmp_path: Path) -> None:
    big = attention(256)
    path = tmp_path / "big.html"
    write_page(path, [ViewResult("attention", "Attention", "big", [big], {})], "t", "")
    source = path.read_text(encoding="utf-8")
    page = Page(source)
    cells = heatmap_cells(page, 0)
    assert len(cells) == 256 * 256 > TITLED_CELLS
    assert cells[(255, 0)].attrs["data-v"] == format(big.values[255][0] or 0, ".6g")
    assert cells[(0, 255)].attrs["data-v"] == "masked"
    assert cells[(10, 3)].text == ""  # no <title> per cell: the script's tooltip reads these
    assert "data-rows" in page.find("svg")[1].attrs
    assert len(source) < 10_000_000
    assert "http" not in source.lower()


def test_a_heatmap_beyond_the_cap_is_cut_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "huge.html"
    write_page(path, [ViewResult("a", "A", "huge", [attention(300)], {})], "t", "")
    page = Page(path.read_text(encoding="utf-8"))
    assert len(heatmap_cells(page, 0)) <= MAX_CELLS
    assert any("of 300 rows" in p.text for p in page.find("p"))


def test_the_page_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "inspect.html"
    path.write_text("old")
    write_page(path, [], "nothing", "")
    assert "<section" not in path.read_text(encoding="utf-8")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["inspect.html"]  # no temporary left


def chromium_or_skip() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "needs chromium (Debian's chromium package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.mark.browser
def test_the_page_runs_in_chromium(tmp_path: Path) -> None:
    import matplotlib.image

    chromium = chromium_or_skip()
    path = tmp_path / "inspect.html"
    write_page(path, views(), "Inspecting a run", "Opened by chromium from disk.")
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    page = Page(dom)
    assert page.find("body")[0].attrs.get("data-rendered") == str(len(views()))
    assert len(page.find("section")) == len(views())
    heatmap = attention()
    for (i, j), cell in heatmap_cells(page, 0).items():
        value = heatmap.values[i][j]
        assert cell.attrs["data-v"] == ("masked" if value is None else format(value, ".6g"))
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,900", path.as_uri()],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (900, 1200)
    assert image[..., :3].std() > 0.05  # drawn, not one flat colour
