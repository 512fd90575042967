"""The comparison's reports: report.json (everything), curves.png, report.md (which embeds it),
and compact text curves for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lmcli.compare.run import Comparison, ModelResult
from lmcli.curves import doubling_spans, span_means, sparkline
from lmcli.files import write_json

PICTURE = "curves.png"


def table_rows(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """The side-by-side table: (what, one cell per model)."""
    models = comparison.models

    def cells(fn: Callable[[ModelResult], str]) -> list[str]:
        return [fn(m) for m in models]

    def mib(n: int | None) -> str:
        return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"

    return [
        ("parameters", cells(lambda m: f"{m.params:,}")),
        ("shape", cells(_shape)),
        ("training tokens/s", cells(lambda m: f"{m.train['tokens_per_s']:,.0f}")),
        ("steps", cells(lambda m: f"{m.train['steps']:,}")),
        ("training time", cells(lambda m: f"{m.train['train_seconds']:.1f} s")),
        ("wall time", cells(lambda m: f"{m.train['wall_seconds']:.1f} s")),
        # Reports from before --compile auto have no such key: nothing was compiled on a CPU.
        (
            "compiling (in wall time)",
            cells(lambda m: f"{m.train.get('compile_seconds', 0.0):.1f} s"),
        ),
        ("best val loss", cells(lambda m: f"{m.train['best_val_loss']:.4f}")),
        ("best val bits/byte", cells(lambda m: f"{m.train['best_val_bpb']:.4f}")),
        ("bits/byte at position 1", cells(lambda m: f"{m.bpb_by_position[0]:.3f}")),
        ("bits/byte at the last position", cells(lambda m: f"{m.bpb_by_position[-1]:.3f}")),
        ("memory of a training step", cells(lambda m: mib(m.memory["total"]))),
        ("… of which activations", cells(lambda m: mib(m.memory["activations"]))),
        ("generation tokens/s", cells(lambda m: f"{m.generation_tokens_per_s:,.0f}")),
    ]


def _shape(m: ModelResult) -> str:
    c = m.config
    if c["model"] == "transformer":
        return f"{c['layers']} × {c['width']}, {c['heads']} heads"
    return f"{c['layers']} × {c['width']}"


def text_curves(comparison: Comparison) -> list[str]:
    """Lines for the terminal: each model's val bits/byte over training, and by position."""
    lines = ["val bits/byte over training time (each model's own scale, high to low is good):"]
    for m in comparison.models:
        bpb = [p["val_bpb"] for p in m.curve]
        lines.append(f"  {m.name:<12} {sparkline(bpb)}  {bpb[0]:.3f} → {bpb[-1]:.3f}")
    spans = doubling_spans(comparison.context)
    heads = "  ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)
    lines.append(f"val bits/byte by position in the window (mean over positions {heads}):")
    for m in comparison.models:
        means = span_means(m.bpb_by_position, spans)
        lines.append(f"  {m.name:<12} " + "  ".join(f"{v:.3f}" for v in means))
    return lines


def write_reports(comparison: Comparison) -> dict[str, Path]:
    """report.json, curves.png and report.md in the comparison's folder; their paths."""
    out = comparison.out
    paths = {"json": out / "report.json", "picture": out / PICTURE, "markdown": out / "report.md"}
    write_json(paths["json"], comparison.to_dict())
    draw_curves(comparison, paths["picture"])
    paths["markdown"].write_text(markdown(comparison), encoding="utf-8")
    return paths


def draw_curves(comparison: Comparison, path: Path) -> None:
    """Three panels: val bits/byte against training time, against tokens seen, and by
    position in the window."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    for m in comparison.models:
        seconds = [p["train_seconds"] for p in m.curve]
        tokens = [p["tokens"] / 1e6 for p in m.curve]
        bpb = [p["val_bpb"] for p in m.curve]
        label = f"{m.name} ({m.params / 1e6:.2f}M)"
        axes[0].plot(seconds, bpb, marker="o", markersize=3, label=label)
        axes[1].plot(tokens, bpb, marker="o", markersize=3, label=label)
        positions = range(1, len(m.bpb_by_position) + 1)
        axes[2].plot(positions, m.bpb_by_position, label=label)
    titles = ("val bits/byte vs training time", "val bits/byte vs tokens seen",
              "val bits/byte by position in the window")  # fmt: skip
    xlabels = ("training seconds (evaluation excluded)", "million tokens seen",
               "position (tokens of context + 1)")  # fmt: skip
    for ax, title, xlabel in zip(axes, titles, xlabels, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].set_xscale("log")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(comparison: Comparison) -> str:
    s = comparison.settings
    budget = f"{s['budget']:g} s of training" if s["budget"] is not None else f"{s['steps']} steps"
    names = [m.name for m in comparison.models]
    lines = [
        f"# lmcli compare-rnn: {' vs '.join(names)}",
        "",
        f"Corpus `{s['corpus']}`, context {comparison.context}, {budget} per model, parameters "
        f"matched by {s['match']}, seed {s['seed']}. Machine: {comparison.machine['cpu']} "
        f"({comparison.machine['cores']} cores), torch {comparison.machine['torch']}"
        + (f", {comparison.machine['gpu']}" if comparison.machine.get("gpu") else "")
        + ".",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {what} | " + " | ".join(cells) + " |" for what, cells in table_rows(comparison)]
    lines += ["", f"![learning curves and loss by position]({PICTURE})", ""]
    for m in comparison.models:
        lines += [f"## Sample: {m.name}", "", "```text", m.sample, "```", ""]
    lines += ["Everything above, and more, is in `report.json`."]
    return "\n".join(lines) + "\n"
