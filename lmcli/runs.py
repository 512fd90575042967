"""Finding and comparing runs (`lmcli runs`): each run directory summed up from its config.json,
metrics.jsonl and lock, and the learning curves of several drawn together.

A run's status: `training` while a process holds its lock; else `finished` when its last metrics
row is the "end" row of a budget spent (or, for a run from before "end" rows, when its steps or
time reached the budget); else `interrupted` (Ctrl-C, a kill, a crash: `lmcli train --resume`
continues it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcli import rundir
from lmcli.errors import InputError

_DEPTH = 3  # runs/NAME, compare-rnn's out/MODEL, one folder more


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str  # the path relative to the folder searched
    model: str  # "transformer 3×96", "lstm 2×256"
    params: int | None
    steps: int
    tokens: int
    train_seconds: float
    best_val_bpb: float | None
    best_val_loss: float | None
    status: str  # finished | interrupted | training
    holder: str | None  # the training process, when training
    tokenizer: str | None
    corpus: str | None
    init_from: str | None
    curve: list[dict[str, float]] = field(repr=False)  # the eval rows: step, tokens, time, bpb
    train_curve: list[dict[str, float]] = field(repr=False)  # train rows, loss in bits/byte

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        return out


def find_runs(paths: list[Path]) -> list[RunSummary]:
    """The runs at or under each path (a run directory, or a folder of them), by name."""
    found: list[RunSummary] = []
    for root in paths:
        if not root.is_dir():
            raise InputError(f"no such folder: {root}" if not root.exists() else
                             f"{root} is a file, not a folder of runs")  # fmt: skip
        dirs = [root] if _is_run(root) else _search(root)
        found += [summarize(d, d.relative_to(root).as_posix() if d != root else str(root))
                  for d in dirs]  # fmt: skip
    if not found:
        where = ", ".join(map(str, paths))
        raise InputError(
            f"no runs in {where} (a run is a folder lmcli train made, with {rundir.CONFIG_FILE})",
            hint="lmcli train leaves its runs under runs/ in the folder it ran in",
        )
    return found


def _is_run(folder: Path) -> bool:
    """A folder lmcli train made: a config.json it can read back."""
    if not (folder / rundir.CONFIG_FILE).is_file():
        return False
    try:
        rundir.load_config(folder)
    except InputError:
        return False
    return True


def _search(root: Path) -> list[Path]:
    runs: list[Path] = []
    for folder, dirs, _ in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if here != root and _is_run(here):
            runs.append(here)
            dirs[:] = []  # a run's data folder holds no runs
        elif depth >= _DEPTH:
            dirs[:] = []
    return sorted(runs, key=lambda p: p.relative_to(root).as_posix())


def summarize(run_dir: Path, name: str) -> RunSummary:
    """One run, from its files; a run whose config.json cannot be read is refused by name."""
    saved = rundir.load_config(run_dir)
    record = saved.record
    rows = rundir.read_metrics(run_dir)
    evals = [r for r in rows if r.get("kind") == "eval" and _finite(r.get("val_bpb"))]
    last = rows[-1] if rows else {}
    best = min(evals, key=lambda r: r["val_bpb"]) if evals else None
    holder = rundir.lock_holder(run_dir)
    meta = _meta(run_dir)
    train_bpt = meta.bytes_per_token("train") if meta is not None else None
    return RunSummary(
        path=run_dir,
        name=name,
        model=_model(record),
        params=_params(record),
        steps=int(max((r.get("step", 0) for r in rows), default=0)),
        tokens=int(last.get("tokens", 0)),
        train_seconds=float(last.get("train_seconds", 0.0)),
        best_val_bpb=best["val_bpb"] if best else None,
        best_val_loss=best.get("val_loss") if best else None,
        status="training" if holder else _status(rows, record),
        holder=holder,
        tokenizer=meta.tokenizer if meta is not None else None,
        corpus=str(meta.corpus.get("source")) if meta is not None else None,
        init_from=(saved.init_from or {}).get("run"),
        curve=[_point(r) for r in evals],
        train_curve=_train_curve(rows, train_bpt),
    )


def _point(row: dict[str, Any]) -> dict[str, float]:
    return {"step": row["step"], "tokens": row.get("tokens", 0),
            "train_seconds": row.get("train_seconds", 0.0), "val_bpb": row["val_bpb"]}  # fmt: skip


def _train_curve(rows: list[dict[str, Any]], per_token: float | None) -> list[dict[str, float]]:
    """The training loss rows in bits per byte (`per_token`: the train split's bytes/token)."""
    if not per_token:
        return []
    ln2 = math.log(2)
    train = [r for r in rows if r.get("kind") == "train" and _finite(r.get("loss"))]
    return [{"step": r["step"], "tokens": r.get("tokens", 0), "bpb": r["loss"] / ln2 / per_token}
            for r in train]  # fmt: skip


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _meta(run_dir: Path) -> Any:
    from lmcli.corpus.tokenfiles import TokenMeta

    try:
        return TokenMeta.load(run_dir)
    except InputError:
        return None


def _status(rows: list[dict[str, Any]], record: dict[str, Any]) -> str:
    if rows and rows[-1].get("kind") == "end":
        return "interrupted" if rows[-1].get("interrupted") else "finished"
    if any(r.get("kind") == "end" for r in rows):
        return "interrupted"  # resumed after its end, then stopped without one
    # A run from before "end" rows (or killed right after its last evaluation): its budget.
    step = max((r.get("step", 0) for r in rows), default=0)
    seconds = max((r.get("train_seconds", 0.0) for r in rows), default=0.0)
    max_steps, max_time = record.get("max-steps"), record.get("max-time")
    if isinstance(max_steps, int) and step >= max_steps:
        return "finished"
    if isinstance(max_time, int | float) and seconds >= max_time:
        return "finished"
    return "interrupted"


def _model(record: dict[str, Any]) -> str:
    kind = record.get("model", "?")
    shape = f"{record.get('layers', '?')}×{record.get('width', '?')}"
    return f"{kind} {shape}"


def _params(record: dict[str, Any]) -> int | None:
    from lmcli.presets import build_configs
    from lmcli.weights import parameter_count

    vocab = record.get("vocab-size")
    if not isinstance(vocab, int):
        return None
    try:
        model_cfg, _ = build_configs(record, vocab)
    except Exception:  # a record no current config accepts: no count, the rest still shown
        return None
    return parameter_count(model_cfg)


def draw_curves(runs: list[RunSummary], path: Path) -> None:
    """Two panels: bits per byte against tokens seen (validation, and training faintly), and
    validation bits per byte against training time."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    from lmcli.files import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        label = f"{run.name} ({run.model}, {run.status})"
        if run.train_curve:
            axes[0].plot([p["tokens"] / 1e6 for p in run.train_curve],
                         [p["bpb"] for p in run.train_curve], color=color, alpha=0.3,
                         linewidth=1)  # fmt: skip
        tokens = [p["tokens"] / 1e6 for p in run.curve]
        bpb = [p["val_bpb"] for p in run.curve]
        axes[0].plot(tokens, bpb, color=color, marker="o", markersize=3, label=label)
        seconds = [p["train_seconds"] for p in run.curve]
        axes[1].plot(seconds, bpb, color=color, marker="o", markersize=3, label=label)
    titles = ("bits/byte vs tokens seen (faint: training loss)", "val bits/byte vs training time")
    xlabels = ("million tokens seen", "training seconds (evaluation excluded)")
    for ax, title, xlabel in zip(axes, titles, xlabels, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
