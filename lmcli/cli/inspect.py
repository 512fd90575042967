"""`lmcli inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcli.cli.render import note, print_json, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.config import INSPECT_VIEWS, InspectConfig
from lmcli.errors import ConfigError

DEFAULTS = InspectConfig(run=Path("."))


def parse_temperatures(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(
            f"--temperature takes numbers separated by commas (got {text!r})",
            hint="e.g. --temperature 0.5,1,2",
        ) from None


def split_arguments(args: list[str]) -> tuple[str | None, Path, str | None]:
    """[VIEW] RUN [PROMPT]: the view is named first when there is one."""
    view = args[0] if args and args[0] in INSPECT_VIEWS else None
    rest = args[1:] if view is not None else args
    if not rest:
        raise ConfigError(
            "name a run: lmcli inspect [VIEW] RUN [PROMPT]",
            hint=f"views: {', '.join(INSPECT_VIEWS)}",
        )
    if len(rest) > 2:
        raise ConfigError(
            f"too many arguments: {' '.join(rest[2:])!r} (quote a prompt of several words)",
            hint=f"lmcli inspect [VIEW] RUN [PROMPT]; views: {', '.join(INSPECT_VIEWS)}",
        )
    return view, Path(rest[0]), rest[1] if len(rest) == 2 else None


def inspect(
    args: Annotated[
        list[str],
        typer.Argument(
            help="[VIEW] RUN [PROMPT]. VIEW is one of: tokens (the text as token spans), next "
            "(the next-token distribution), attention (per layer and head), surprise (each "
            "token's surprisal), heads (previous-token, induction, ... scores), memory (how far "
            "back the model remembers), lens (the logit lens), positions (the positional "
            "encoding). Without a view: a tour (tokens, next, one attention head, lens). RUN "
            "is a run directory or a weights file; PROMPT the text (default: the start of the "
            "run's validation split).",
            show_default=False,
            metavar="[VIEW] RUN [PROMPT]",
        ),
    ],
    file: Annotated[
        Path | None, typer.Option(help="Read the text from this file instead of PROMPT.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write a PNG per view and one self-contained HTML page (inspect.html, "
            "works offline) into this folder; the tour's page holds every view."
        ),
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="attention: only this layer (0-based).", show_default=False)
    ] = None,
    head: Annotated[
        int | None, typer.Option(help="attention: only this head (0-based).", show_default=False)
    ] = None,
    query: Annotated[
        int | None,
        typer.Option(
            help="attention: also this query position's weights as bars.", show_default=False
        ),
    ] = None,
    stages: Annotated[
        bool,
        typer.Option(help="attention: also the raw scores q·k/√D and the mask, before softmax."),
    ] = False,
    temperature: Annotated[
        str, typer.Option(help="next: temperatures side by side, separated by commas.")
    ] = "0.5,1,2",
    top_k: Annotated[
        int | None,
        typer.Option(
            help="next: keep the k most likely tokens (as lmcli sample does).", show_default=False
        ),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            help="next: keep the smallest set of tokens whose probability reaches p.",
            show_default=False,
        ),
    ] = None,
    vs: Annotated[
        str | None,
        typer.Option(
            help="tokens: also split the text with this pretrained tiktoken encoding "
            "(gpt2, cl100k_base, ...; needs it downloaded once).",
            show_default=False,
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            help="surprise, memory: a second run with the same tokenizer, set beside "
            "the first (e.g. the LSTM that compare-rnn trained).",
            show_default=False,
        ),
    ] = None,
    top: Annotated[
        int, typer.Option(help="Rows of a ranking (next's tokens, surprise's worst tokens).")
    ] = DEFAULTS.top,
    seed: Annotated[
        int, typer.Option(help="heads, memory: the seed of their random tokens.")
    ] = DEFAULTS.seed,
    drop_unknown: Annotated[
        bool,
        typer.Option(
            help="Leave out the characters a char model has never seen, instead of "
            "refusing the text."
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the numbers as one JSON object.")
    ] = False,
) -> None:
    """Show what a trained model does, on your own model and text: its tokens, its next-token
    distribution, its attention, its surprise, its heads, its memory, its logit lens and its
    positions. Terminal first; --out adds PNG pictures and an offline HTML page."""
    with user_errors(), stop_at_once():
        view, run, prompt = split_arguments(args)
        cfg = InspectConfig(
            run=run,
            view=view,
            prompt=prompt,
            file=file,
            out=out,
            layer=layer,
            head=head,
            query=query,
            stages=stages,
            temperatures=parse_temperatures(temperature),
            top_k=top_k,
            top_p=top_p,
            vs=vs,
            compare=compare,
            top=top,
            seed=seed,
            drop_unknown=drop_unknown,
        )
        import torch

        from lmcli.inspect import inspect_run

        torch.set_num_threads(1)  # tiny forwards: one thread never waits on another
        result = inspect_run(cfg)
        if json_out:
            print_json(result.to_dict())
        else:
            from lmcli.cli.inspect_terminal import show

            for view_result in result.views:
                show(view_result)
        for path in result.files:
            note(f"wrote {path}")
