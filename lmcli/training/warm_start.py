"""Warm start (`lmcli train CORPUS --init-from RUN`): a new run that begins from RUN's weights.

As char-rnn defined `init_from`: the parameters are initialised from RUN, nothing else is
resumed. The new run takes RUN's architecture (a model flag that differs is refused) and its
tokenizer (the new corpus is encoded with it), and a fresh optimizer and schedule from step 0.
It evaluates once before its first step, so its curve starts where RUN's weights stand on the
new data; its config.json records where it started (`init_from`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError, InputError
from lmcli.rundir import CONFIG_FILE, find_weights
from lmcli.tokenizers import TOKENIZER_FILE, load_tokenizer
from lmcli.weights import content_hash, read_weights, resolve_weights

# Model settings a warm start may change: they shape no parameter.
_FREE = {"dropout"}


@dataclass(frozen=True)
class Source:
    run: Path
    weights: Path
    model: ModelConfig
    step: int | None
    sha256: str  # of the tensors, as the weights file records it

    def record(self) -> dict[str, Any]:
        """What the new run's config.json says of where it started."""
        return {"run": str(self.run.absolute()), "weights": self.weights.name,
                "step": self.step, "sha256": self.sha256}  # fmt: skip


def open_source(run: Path) -> Source:
    """RUN's weights and architecture, refused in one line if RUN is not a trained run."""
    if not run.is_dir():
        raise InputError(
            f"--init-from {run}: no such run directory"
            if not run.exists()
            else f"--init-from {run} is a file; pass the run directory it belongs to"
        )
    if not (run / CONFIG_FILE).is_file() or not (run / TOKENIZER_FILE).is_file():
        raise InputError(
            f"--init-from {run} is not an lmcli run directory (no {CONFIG_FILE} and "
            f"{TOKENIZER_FILE})",
            hint="pass a folder lmcli train made (under runs/)",
        )
    find_weights(run)  # a run killed before its first checkpoint has none: say so
    weights = read_weights(resolve_weights(run).path)
    return Source(
        run=run,
        weights=weights.path,
        model=weights.config,
        step=weights.step,
        sha256=content_hash(weights.arrays),
    )


def architecture(source: Source, explicit: dict[str, Any], model_keys: set[str]) -> dict[str, Any]:
    """RUN's model settings as flag-spelled keys, to build the new run's model from; a model
    setting given on the command line or in --config must repeat RUN's (dropout may change)."""
    theirs = {k.replace("_", "-"): v for k, v in dataclasses.asdict(source.model).items()}
    theirs.pop("vocab-size")
    differing = [
        f"--{key} {value!r} (RUN's is {theirs.get(key)!r})"
        for key, value in explicit.items()
        if key in model_keys and key not in _FREE and not _same(value, theirs.get(key))
    ]
    if differing:
        kind = {"transformer": "a transformer", "lstm": "an LSTM", "gru": "a GRU"}
        raise ConfigError(
            f"--init-from {source.run} takes that run's architecture "
            f"({kind.get(source.model.model, source.model.model)}); "
            + ", ".join(differing)
            + " would change it",
            hint="leave the model flags out (only --dropout may change), or train from scratch",
        )
    return {k: v for k, v in theirs.items() if k not in _FREE}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check_same_tokenizer(token_dir: Path, source: Source) -> None:
    """A token directory given as the corpus must be encoded with RUN's tokenizer."""
    mine, theirs = load_tokenizer(token_dir), load_tokenizer(source.run)
    if mine.fingerprint() != theirs.fingerprint():
        raise InputError(
            f"{token_dir} was tokenized with another tokenizer ({mine.name}, vocabulary "
            f"{mine.vocab_size:,}) than {source.run} ({theirs.name}, {theirs.vocab_size:,})",
            hint="pass the text instead: it is then encoded with the run's tokenizer",
        )


def recorded_source(init_from: dict[str, Any], run_dir: Path) -> Path:
    """The weights a warm start recorded in its config.json, for a resume that begins again
    from step 0: refused if they are gone or changed since."""
    path = Path(init_from["run"]) / init_from["weights"]
    if not path.is_file():
        raise InputError(
            f"{run_dir} began from {path}, which is gone, and saved no checkpoint of its own",
            hint="start the warm start again (lmcli train … --init-from RUN)",
        )
    if content_hash(read_weights(path).arrays) != init_from.get("sha256"):
        raise InputError(f"{run_dir} began from {path}, which has changed since")
    return path
