"""Command-line options: one helper for every command's, and `lmcli train`'s flags made from
the config dataclasses themselves.

Every field of ModelConfig and TrainConfig (lmcli/config.py) is a flag of the same name, with
the field's help, in the panel of its class; a Literal field lists its values after its help.
So a new setting is a field in config.py, and nothing here changes; the flags and the config-file
keys cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import typer

from lmcli.config import ModelConfig, TrainConfig

PANELS = {ModelConfig: "Model", TrainConfig: "Training"}


def option(help: str, panel: str | None = None, show_default: bool = False, **kw: Any) -> Any:
    """A typer option. Its default is shown only if asked: most help texts say theirs (a
    preset's, a derived one) in their own words."""
    return typer.Option(help=help, rich_help_panel=panel, show_default=show_default, **kw)


def _flag_type(hint: Any, duration: bool) -> tuple[type, str]:
    """The type typer parses a field's flag as, and what to add to its help (a Literal's
    values). Durations are text ("3m"), parsed by lmcli.config.parse_duration."""
    options = [o for o in typing.get_args(hint) if o is not type(None)] or [hint]
    if typing.get_origin(hint) is Literal:
        options = [hint]
    kind = options[0]
    if typing.get_origin(kind) is Literal:
        return str, " " + ", ".join(typing.get_args(kind)) + "."
    if duration:
        return str, ""
    return kind, ""


def settings_parameters() -> Iterator[inspect.Parameter]:
    """One keyword parameter per config field, each an optional typer option."""
    for cls, panel in PANELS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("flag") is False:
                continue
            kind, values = _flag_type(hints[f.name], bool(f.metadata.get("duration")))
            annotation = Annotated[kind | None, option(f.metadata["help"] + values, panel)]  # type: ignore[valid-type]
            yield inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=annotation)  # fmt: skip


def durations() -> set[str]:
    """The flags (flag-spelled) whose values are durations."""
    return {
        f.name.replace("_", "-")
        for cls in PANELS
        for f in dataclasses.fields(cls)
        if f.metadata.get("duration")
    }


def with_settings(command: Callable[..., None]) -> Callable[..., None]:
    """`command(**settings)` with a flag for every config field: typer reads the signature."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # typer's metadata, evaluated
    fixed = [
        p.replace(annotation=hints[p.name])
        for p in signature.parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    extra = list(settings_parameters())
    command.__signature__ = signature.replace(parameters=[*fixed, *extra])  # type: ignore[attr-defined]
    command.__annotations__ = {**command.__annotations__,
                               **{p.name: p.annotation for p in extra}}  # fmt: skip
    return command
