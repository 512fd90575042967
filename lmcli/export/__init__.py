"""`lmcli export`: a trained transformer as a Hugging Face folder or a llama.cpp .gguf file,
checked by loading it in transformers or llama.cpp and comparing with lmcli's own forward.

The export is written into a temporary sibling of its destination, verified there, and only
then renamed into place: a failure, a mismatch or Ctrl-C leaves nothing that looks like an
export. Writing needs safetensors (hf) or the `gguf` package (gguf); checking needs transformers
or llama-cpp-python (`pip install lmcli[export]`). Without the checker the export is still
written, and the result says which check did not run and how to get it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.config import ExportConfig
from lmcli.errors import EnvironmentFailure, InputError
from lmcli.export.targets import Target, choose_target

INSTALL = "pip install 'lmcli[export]'"
HF_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors",
                      "tokenizer.json", "tokenizer_config.json"})  # fmt: skip


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    architecture: str
    weights: Path
    notes: list[str]
    verification: dict[str, Any] | None  # None: not run (--no-verify, or no consumer)
    unverified: str | None = None  # why the check did not run
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "out": str(self.out), "weights": str(self.weights)}


def export_run(cfg: ExportConfig) -> ExportResult:
    from lmcli.tokenizers import load_tokenizer
    from lmcli.weights import read_weights, resolve_weights

    cfg.validate()
    resolved = resolve_weights(cfg.run)
    weights = read_weights(resolved.path)
    run_dir = cfg.run if cfg.run.is_dir() else cfg.run.parent
    target = choose_target(weights.config, cfg.format)
    tokenizer = load_tokenizer(run_dir)
    name = run_dir.absolute().name
    out = cfg.out or (Path("exports") / (f"{name}-hf" if cfg.format == "hf" else f"{name}.gguf"))
    _check_out(out, cfg.format, cfg.force)
    tmp = out.absolute().parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    notes = [n for n in (resolved.note, *target.notes) if n]
    try:
        _write(weights, tokenizer, target, tmp, name)
        verification, unverified = None, "--no-verify" if not cfg.verify else None
        if cfg.verify:
            verification, unverified = _verify(weights, tokenizer, target, tmp, run_dir, notes)
        _replace(tmp, out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else [out.name]
    return ExportResult(out, cfg.format, target.architecture, resolved.path, notes,
                        verification, unverified, files)  # fmt: skip


def _check_out(out: Path, fmt: str, force: bool) -> None:
    """A new destination, or with --force one that is an export of the same format: --force
    never deletes anything else."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise InputError(
            f"{out} exists", hint="pass --force to replace it, or choose another --out"
        )
    if fmt == "hf":
        names = {p.name for p in out.iterdir()} if out.is_dir() else None
        if names is None or not names <= HF_FILES:
            raise InputError(
                f"--force replaces only an export folder; {out} holds other files",
                hint="choose another --out",
            )
    elif not (out.is_file() and out.suffix == ".gguf"):
        raise InputError(f"--force replaces only a .gguf file; {out} is not one")


def _write(weights: Any, tokenizer: Any, target: Target, tmp: Path, name: str) -> None:
    if target.format == "hf":
        from lmcli.export.hf import write_hf

        tmp.mkdir()
        write_hf(weights, tokenizer, target, tmp)
        return
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise EnvironmentFailure(
            "writing GGUF needs the gguf package (llama.cpp's writer)", hint=INSTALL
        ) from None
    from lmcli.export.gguf import write_gguf

    write_gguf(weights, tokenizer, target, tmp, name)


def _verify(
    weights: Any, tokenizer: Any, target: Target, tmp: Path, run_dir: Path, notes: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    from lmcli.export import verify

    batch = _batch(run_dir, weights.config, notes)
    ref = verify.reference(weights, tokenizer, batch)
    try:
        if target.format == "hf":
            result = verify.verify_hf(tmp, ref, batch)
        else:
            result = verify.verify_gguf(tmp, ref, batch, weights.config.context)
    except verify.Unverifiable as exc:
        return None, f"{exc}: {INSTALL} to check the export"
    if not result.ok:
        failed = []
        if result.max_logit_diff > result.tolerance:
            failed.append(
                f"logits differ by {result.max_logit_diff:.2e} (> {result.tolerance:.0e})"
            )
        if not result.tokens_match:
            failed.append("the tokenizer's ids differ on the stress string")
        if not result.greedy_match:
            failed.append("the greedy continuation differs")
        raise InputError(
            f"the export does not compute what lmcli does under {result.consumer}: "
            + "; ".join(failed),
            hint="nothing was left at the destination; please report this with the run's config",
        )
    return result.to_dict(), None


def _batch(run_dir: Path, cfg: Any, notes: list[str]) -> np.ndarray:
    """Two windows of the run's validation split (B, T), or seeded random ids without it."""
    from lmcli import rundir
    from lmcli.corpus.tokenfiles import open_tokens

    T = cfg.context
    try:
        tokens = np.asarray(open_tokens(rundir.load_config(run_dir).data, "val"))
    except InputError:
        tokens = np.zeros(0, np.int64)
    if len(tokens) >= 2 * T:
        return tokens[: 2 * T].reshape(2, T).astype(np.int64)
    notes.append("the run's validation split is not here: checked on random token ids")
    return np.random.default_rng(0).integers(0, cfg.vocab_size, (2, T))


def _replace(tmp: Path, out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)
