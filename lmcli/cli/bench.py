"""`lmcli bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcli.cli.options import option
from lmcli.cli.render import note, print_grid, print_json, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.errors import ConfigError


def bench(
    suite: Annotated[
        str, option("Comma-separated: tokenize, train, sample, or all. \\[default: all]")
    ] = "all",
    preset: Annotated[
        str | None,
        option(
            "Models, comma-separated: tiny, small (presets) and lstm (2 × 512 on tiny's "
            "settings). \\[default: all three; tiny,lstm with --quick]"
        ),
    ] = None,
    device: Annotated[str, option("auto, cpu, cuda, cuda:N or mps. \\[default: auto]")] = "auto",
    corpus: Annotated[
        Path | None,
        option(
            "A text file to measure on (default: Tiny Shakespeare if already downloaded, "
            "else a synthetic text; nothing is downloaded)."
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="About half a minute on a CPU: 256 KB of text, the tiny model and the LSTM, "
            "3 runs per figure.",
        ),
    ] = False,
    repeats: Annotated[
        int, option("Measured runs per figure, after a warm-up. \\[default: 5]")
    ] = 5,
    sample_tokens: Annotated[int, option("New tokens per sampling run. \\[default: 500]")] = 500,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the figures and the machine as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """Measure lmcli on this machine: tokenizing, training and sampling speed, and memory.
    Each figure is the median of repeated runs after a warm-up, with its range."""
    from lmcli.bench.suites import MODELS, QUICK_MODELS, SUITES, BenchConfig, run_bench

    with user_errors(), stop_at_once():
        suites = tuple(s.strip() for s in suite.split(",") if s.strip())
        suites = SUITES if suites == ("all",) else suites
        unknown = [s for s in suites if s not in SUITES]
        if unknown or not suites:
            raise ConfigError(
                f"--suite: unknown suite {(unknown or [suite])[0]!r}",
                hint=f"choose from {', '.join(SUITES)} or all",
            )
        models = tuple(QUICK_MODELS if quick else MODELS)
        if preset is not None:
            models = tuple(m.strip() for m in preset.split(",") if m.strip())
        bad = [m for m in models if m not in MODELS]
        if bad or not models:
            raise ConfigError(
                f"--preset: unknown model {(bad or [preset or ''])[0]!r}",
                hint=f"choose from {', '.join(MODELS)}",
            )
        for flag, value in {"--repeats": repeats, "--sample-tokens": sample_tokens}.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        if corpus is not None and not corpus.is_file():
            raise ConfigError(f"--corpus: no such file: {corpus}")
        cfg = BenchConfig(suites=suites, models=models, device=device, quick=quick,
                          corpus=corpus, repeats=repeats, sample_tokens=sample_tokens)  # fmt: skip

        def on_event(event: Any) -> None:
            if not (quiet or json_out):
                note(event.message)

        from lmcli.devices import describe_machine, resolve_device

        machine = describe_machine(resolve_device(device))
        figures = run_bench(cfg, on_event)
        _print(machine, figures, json_out, {"suites": list(suites), "models": list(models),
                                            "device": device, "quick": quick, "repeats": repeats,
                                            "sample_tokens": sample_tokens})  # fmt: skip


def _print(
    machine: dict[str, Any], figures: list[Any], json_out: bool, settings: dict[str, Any]
) -> None:
    if json_out:
        print_json({"machine": machine, "settings": settings,
                    "figures": [f.to_dict() for f in figures]})  # fmt: skip
        return
    rows = [
        (f"{f.suite}: {f.name}", [_num(f.median), f"{_num(f.low)}–{_num(f.high)}", f.unit,
                                  _settings(f.settings)])
        for f in figures
    ]  # fmt: skip
    print_grid(
        f"lmcli bench: {machine['cpu']} ({machine['cores']} cores)"
        + (f", {machine['gpu']}" if machine.get("gpu") else "")
        + f", torch {machine['torch']}",
        ["median", "range", "unit", "with"],
        rows,
    )
    texts = sorted({str(f.settings["text"]) for f in figures if "text" in f.settings})
    text = f"text: {', '.join(texts)}; " if texts else ""
    note(f"{text}each figure: median and range of the measured runs")


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _settings(settings: dict[str, Any]) -> str:
    """The few settings that tell figures apart; --json has them all."""
    parts = []
    if "params" in settings:
        parts.append(f"{settings['params'] / 1e6:.2f}M params")
    for key, label in (("batch_size", "batch"), ("threads", "threads"), ("engine", "engine"),
                       ("dtype", ""), ("text_mb", "MB")):  # fmt: skip
        if key in settings:
            parts.append(f"{label} {settings[key]}".strip() if key != "text_mb"
                         else f"{settings[key]} MB")  # fmt: skip
    return ", ".join(parts)
