"""`lmcli export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmcli.cli.render import note, print_json, print_table, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.config import ExportConfig


def export(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run directory (its best.safetensors) or a weights file beside its "
            "tokenizer.json.",
            show_default=False,
        ),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="hf: a folder transformers loads (AutoModelForCausalLM, AutoTokenizer); "
            "gguf: one file llama.cpp runs.",
        ),
    ] = "hf",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write. \\[default: exports/RUN-hf, or exports/RUN.gguf]",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing export at --out (only an export).")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="Load the export in transformers or llama.cpp and compare its logits, "
            "tokenizer and greedy text with lmcli's; a mismatch is an error and nothing is left."
        ),
    ] = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Export a trained transformer to Hugging Face transformers or llama.cpp, verified by
    loading it there."""
    cfg = ExportConfig(run=run, format=format, out=out, force=force, verify=verify)
    with user_errors(), stop_at_once():
        from lmcli.export import export_run

        result = export_run(cfg)
        for line in result.notes:
            note(f"note: {line}")
        if result.unverified and result.unverified != "--no-verify":
            note(f"not verified: {result.unverified}")
        if json_out:
            print_json(result.to_dict())
            return
        rows = [("written", str(result.out)), ("architecture", result.architecture),
                ("from", str(result.weights))]  # fmt: skip
        v = result.verification
        if v is not None:
            rows += [
                ("checked with", v["consumer"]),
                ("max |Δ logit|", f"{v['max_logit_diff']:.2e} over {v['positions']:,} positions "
                                  f"(tolerance {v['tolerance']:.0e})"),
                ("tokenizer ids", "identical" if v["tokens_match"] else "DIFFERENT"),
                ("greedy continuation", "identical" if v["greedy_match"] else "DIFFERENT"),
            ]  # fmt: skip
        else:
            rows.append(("checked", f"no ({result.unverified})"))
        print_table("lmcli export", rows)
