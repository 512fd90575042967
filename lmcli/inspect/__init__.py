"""`lmcli inspect`: each concept of the transformer explainers drawn on the user's own model.

    result = inspect_run(InspectConfig(run=Path("runs/x"), view="attention", prompt="ROMEO:"))
    result.views[0].panels    # what to draw (lmcli/inspect/panels.py)
    result.views[0].to_dict() # the numbers

Each view is one module in lmcli/inspect/views/ computing a ViewResult; the terminal, the PNG
pictures (pictures.py) and the offline HTML page (page.py) draw its panels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lmcli.config import INSPECT_VIEWS, InspectConfig
from lmcli.errors import InputError
from lmcli.inspect.panels import ViewResult
from lmcli.inspect.source import Subject, Text, open_subject, read_text
from lmcli.inspect.views import (
    attention,
    heads,
    lens,
    memory,
    nexttoken,
    positions,
    surprise,
    tokens,
)

ViewFunction = Callable[[Subject, Text, InspectConfig], ViewResult]
VIEWS: dict[str, ViewFunction] = {
    "tokens": tokens.view,
    "next": nexttoken.view,
    "attention": attention.view,
    "surprise": surprise.view,
    "heads": heads.view,
    "memory": memory.view,
    "lens": lens.view,
    "positions": positions.view,
}
assert tuple(VIEWS) == INSPECT_VIEWS
# What an LSTM or GRU has: no attention, no residual stream of layers, no position table.
RECURRENT_VIEWS = ("tokens", "next", "surprise", "heads", "memory")
TOUR = ("tokens", "next", "attention", "lens")
PAGE = "inspect.html"


@dataclass(frozen=True)
class Inspection:
    run: str
    views: list[ViewResult]  # shown in the terminal
    page_views: list[ViewResult]  # on the HTML page (the tour's page holds every view)
    files: list[Path]  # written under --out

    def to_dict(self) -> dict[str, object]:
        return {
            "run": self.run,
            "views": [v.to_dict() for v in self.views],
            "files": [str(f) for f in self.files],
        }


def check_applies(subject: Subject, view: str) -> None:
    if subject.is_transformer or view in RECURRENT_VIEWS:
        return
    missing = "layers of a residual stream" if view == "lens" else "attention"
    raise InputError(
        f"an {subject.kind} has no {missing} to show in the {view} view",
        hint=f"its views are {', '.join(RECURRENT_VIEWS)}; try lmcli inspect memory",
    )


def _one(subject: Subject, text: Text, cfg: InspectConfig, view: str) -> ViewResult:
    check_applies(subject, view)
    if view != "tokens" and not text.ids:  # encode the raw text now (refusing unknown characters)
        text.ids = read_text(subject, cfg.prompt, cfg.file, cfg.drop_unknown).ids
    # A copy: one view's note on cutting the text is not the next one's.
    return VIEWS[view](subject, replace(text, notes=list(text.notes)), cfg)


def inspect_run(cfg: InspectConfig) -> Inspection:
    """Compute the view (or the tour), and with cfg.out write a PNG per view and the page."""
    cfg.validate()
    subject = open_subject(cfg.run)
    if cfg.view is not None:
        check_applies(subject, cfg.view)
    text = read_text(subject, cfg.prompt, cfg.file, cfg.drop_unknown, encode=False)
    if text.source == "the validation split":
        text.notes.append("no text given: the start of the validation split")
    names = [cfg.view] if cfg.view is not None else list(TOUR)
    results = []
    for name in names:
        view_cfg = cfg
        if cfg.view is None and name == "attention":  # the tour draws one head
            last = subject.config.layers - 1
            view_cfg = replace(
                cfg,
                layer=last if cfg.layer is None else cfg.layer,
                head=0 if cfg.head is None else cfg.head,
            )
        if subject.is_transformer or name in RECURRENT_VIEWS:
            results.append(_one(subject, text, view_cfg, name))
    page_views = results
    if cfg.view is None and cfg.out is not None:  # the tour's page holds every view
        done = {r.view for r in results if r.view != "attention"}  # the page: every head
        page_views = []
        for name in INSPECT_VIEWS:
            if not (subject.is_transformer or name in RECURRENT_VIEWS):
                continue
            if name in done:
                page_views.append(next(r for r in results if r.view == name))
                continue
            page_views.append(_one(subject, text, cfg, name))
    files = write_outputs(cfg, subject, page_views) if cfg.out is not None else []
    return Inspection(str(cfg.run), results, page_views, files)


def write_outputs(cfg: InspectConfig, subject: Subject, results: list[ViewResult]) -> list[Path]:
    from lmcli.inspect.page import write_page
    from lmcli.inspect.pictures import write_picture

    assert cfg.out is not None
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {cfg.out}: {exc.strerror}") from None
    files = []
    for result in results:
        path = cfg.out / f"{result.view}.png"
        write_picture(path, result)
        files.append(path)
    page = cfg.out / PAGE
    step = "" if subject.step is None else f", step {subject.step:,}"
    intro = (
        f"{subject.kind} of {subject.model.num_params():,} parameters from {cfg.run}{step}: "
        f"{subject.config.layers} layers, width {subject.config.width}, "
        f"context {subject.config.context}."
    )
    write_page(page, results, f"lmcli inspect: {cfg.run.name}", intro)
    files.append(page)
    return files
