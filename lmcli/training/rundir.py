"""The run directory: what a training run leaves behind, and what `--resume` and `sample` read.

config.json      model + training config (flag-spelled keys), data location, versions
tokenizer.json   the tokenizer (+ tokenizer.tiktoken for BPE), copied from the token data
meta.json        the token data's description (byte counts for bits per byte)
last.pt          full training state: weights, optimizer, step, RNG (resume from here)
best.pt          weights of the best validation loss so far (sample from here)
metrics.jsonl    one JSON object per log step and per evaluation
data/            token files, when `train` tokenized a text file itself
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from lmcli import __version__
from lmcli.checkpoints import atomic_write_bytes
from lmcli.corpus.tokenfiles import META_FILE
from lmcli.errors import ConfigError, InputError
from lmcli.tokenizers import RANKS_FILE, TOKENIZER_FILE

CONFIG_FILE = "config.json"
LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
SCHEMA_VERSION = 1
# Keys that may differ when resuming: budgets, reporting and where/how fast it runs.
RESUMABLE_CHANGES = {
    "max-steps", "max-time", "eval-every", "eval-interval", "log-every", "device", "dtype",
    "compile", "threads",
}  # fmt: skip


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def create(run_dir: Path, token_dir: Path, record: dict[str, Any]) -> None:
    """Make a new run directory with the config and a copy of the tokenizer."""
    if (run_dir / LAST).exists() or (run_dir / CONFIG_FILE).exists():
        raise InputError(
            f"{run_dir} already holds a run",
            hint=f"continue it with --resume {run_dir}, or choose another --out",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (TOKENIZER_FILE, RANKS_FILE, META_FILE):
        src = token_dir / name
        if src.is_file() and src.resolve() != (run_dir / name).resolve():
            shutil.copyfile(src, run_dir / name)
    config = {
        "schema_version": SCHEMA_VERSION,
        "lmcli_version": __version__,
        "data": str(token_dir.resolve()),
        "config": record,
    }
    write_json(run_dir / CONFIG_FILE, config)


def load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} is not an lmcli run directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if config.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: unsupported run schema {config.get('schema_version')!r}")
    return config


def check_resumable(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse a resume whose config differs from the saved one beyond budgets and devices."""
    differing = [
        f"{key} {saved.get(key)!r} → {new.get(key)!r}"
        for key in sorted(set(saved) | set(new))
        if key not in RESUMABLE_CHANGES and key != "preset" and saved.get(key) != new.get(key)
    ]
    if differing:
        raise ConfigError(
            "cannot resume with a different config: " + "; ".join(differing),
            hint="only budgets, evaluation/log intervals, device, dtype, compile and threads "
            "may change on --resume",
        )


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric rows logged after the checkpoint we resume from."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a row torn by a crash
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode("utf-8"))
