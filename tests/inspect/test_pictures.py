"""The PNG pictures: one valid, non-blank picture per view, whatever its panels hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcli.inspect.panels import Bars, Heatmap, Lines, Spans, Table, ViewResult
from lmcli.inspect.pictures import MAX_PANELS, write_picture
from tests.inspect.synthetic import BARS, LINES, SPANS, TABLE, attention, lens, views

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def picture(path: Path) -> tuple[int, int, float]:
    """The PNG's height, width and the spread of its pixel values."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    return image.shape[0], image.shape[1], float(image[..., :3].std())


@pytest.mark.parametrize("view", views(), ids=lambda v: v.view)
def test_each_view_draws_a_picture(tmp_path: Path, view: ViewResult) -> None:
    path = tmp_path / f"{view.view}.png"
    write_picture(path, view)
    height, width, spread = picture(path)
    assert 400 < height < 3000 and 800 < width < 3000
    assert spread > 0.05  # drawn, not one flat colour
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


@pytest.mark.parametrize("panel", [attention(), lens(), BARS, SPANS, LINES, TABLE],
                         ids=["attention", "lens", "bars", "spans", "lines", "table"])  # fmt: skip
def test_each_panel_kind_alone(tmp_path: Path, panel: object) -> None:
    path = tmp_path / "one.png"
    write_picture(path, ViewResult("one", "One panel", "A single panel.", [panel], {}))  # type: ignore[list-item]
    assert picture(path)[2] > 0.05


def test_masked_cells_are_drawn_apart_from_low_values(tmp_path: Path) -> None:
    """A causal map's upper triangle is hatched grey; its low values are near-white blue."""
    import matplotlib.image

    values: list[list[float | None]] = [
        [0.0 if j <= i else None for j in range(8)] for i in range(8)
    ]
    names = [str(i) for i in range(8)]
    path = tmp_path / "masked.png"
    write_picture(path, ViewResult("a", "A", "masked", [Heatmap("m", values, names, names)], {}))
    image = matplotlib.image.imread(path)[..., :3]
    colours = {tuple(round(float(c), 2) for c in px) for px in image.reshape(-1, 3)}
    assert (0.97, 0.98, 1.0) in colours  # the scale's lo (#f7fbff)
    assert (0.93, 0.93, 0.95) in colours  # the masked background (#eceef1)


def test_many_panels_are_capped(tmp_path: Path) -> None:
    panels = [Bars(f"bars {i}", ["a", "b"], [0.3, 0.7]) for i in range(MAX_PANELS + 3)]
    path = tmp_path / "many.png"
    write_picture(path, ViewResult("many", "Many", "Too many panels.", panels, {}))  # type: ignore[arg-type]
    height, width, _ = picture(path)
    assert height < 3000 and width < 2200


def test_an_empty_view_still_draws(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    write_picture(path, ViewResult("empty", "Empty", "Nothing to show.", [], {}))
    assert picture(path)[2] > 0.0


def test_empty_panels_of_every_kind_still_draw(tmp_path: Path) -> None:
    from lmcli.inspect.page import write_page

    empty = [
        Heatmap("no cells", [], [], []),
        Bars("no bars", [], []),
        Spans("no text", []),
        Lines("no curves", [], {}, log_x=True),
        Lines("no points", [1.0, 2.0], {"a": [None, None]}),
        Table("no rows", ["a", "b"], []),
    ]
    view = ViewResult("empty", "Empty", "Panels with nothing in them.", empty, {})  # type: ignore[arg-type]
    write_picture(tmp_path / "empty.png", view)
    write_page(tmp_path / "empty.html", [view], "empty", "")
    assert picture(tmp_path / "empty.png")[2] > 0.0
    assert (tmp_path / "empty.html").read_text(encoding="utf-8").count("<figure") == 6
