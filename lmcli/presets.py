"""Presets, config files and flags, merged into one ModelConfig and one TrainConfig.

Every key is spelled as its flag (`kv-heads`, `batch-size`): in presets, in TOML/JSON config
files and on the command line. Later sources win: dataclass defaults < preset < config file <
flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

from lmcli.config import TYPE_NAMES, ModelConfig, TrainConfig, checked_value, parse_duration
from lmcli.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # The default run: the lowest validation loss we measured after 3 minutes of training on a
    # 2-core CPU (README, Performance: the 3-minute recipe). At this budget a small, fast model
    # wins. Context 256 is read in 64- then 128-token rows for the first 70 % of the budget
    # (seq-warmup: cheaper attention, so more steps), then whole; 2,048 tokens a step throughout.
    # The head is untied from the token table, and the table learns at 10x the AdamW rate (its
    # rows see few updates each, and Muon does not train it). Muon scales up the step of the
    # MLP's wide output projection as it does the tall matrices' (muon-scale aspect). A wider,
    # deeper model and the speedrun tricks we tried did not pay within the 180 s.
    "quick": {
        "model": "transformer",
        "layers": 3,
        "width": 96,
        "heads": 4,
        "context": 256,
        "pos": "rope",
        "norm": "rmsnorm",
        "mlp": "gelu",
        "dropout": 0.0,
        "tie": False,
        "batch-size": 8,
        "seq-warmup": "64:0.3,128:0.7",
        "optimizer": "muon",
        "muon-lr": 0.02,
        "muon-scale": "aspect",
        "lr": 8e-3,
        "embedding-lr": 0.08,
        "warmup": 50,
        "max-time": 180.0,
        "eval-every": 1000,
    },
    # About a million parameters: nanoGPT's CPU size with RoPE and RMSNorm.
    "tiny": {
        "model": "transformer",
        "layers": 4,
        "width": 128,
        "heads": 4,
        "context": 64,
        "pos": "rope",
        "norm": "rmsnorm",
        "mlp": "gelu",
        "dropout": 0.0,
        "batch-size": 32,
        "lr": 3e-3,
        "warmup": 50,
        "max-time": 300.0,
        "eval-every": 500,
    },
    # nanoGPT's Shakespeare-char scale (6 layers, 384 wide, 6 heads, context 256), for a GPU.
    "small": {
        "model": "transformer",
        "layers": 6,
        "width": 384,
        "heads": 6,
        "context": 256,
        "pos": "rope",
        "norm": "rmsnorm",
        "mlp": "gelu",
        "dropout": 0.2,
        "batch-size": 64,
        "lr": 1e-3,
        "warmup": 100,
        "beta2": 0.99,
        "max-steps": 5000,
        "eval-every": 250,
    },
    # GPT-2 small's shape: 12 layers, 768 wide, 12 heads, context 1024, learned positions.
    "gpt2-small": {
        "model": "transformer",
        "layers": 12,
        "width": 768,
        "heads": 12,
        "context": 1024,
        "pos": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "bias": True,
        "dropout": 0.0,
        "batch-size": 16,
        "grad-accum": 4,
        "lr": 6e-4,
        "warmup": 200,
        "beta2": 0.95,
        "max-steps": 5000,
        "eval-every": 500,
    },
    # karpathy/nanoGPT's documented CPU recipe (README "I only have a macbook"), for comparing
    # throughput and loss side by side.
    "nanogpt-cpu": {
        "model": "transformer",
        "layers": 4,
        "width": 128,
        "heads": 4,
        "context": 64,
        "pos": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "bias": True,
        "dropout": 0.0,
        "batch-size": 12,
        "lr": 1e-3,
        "warmup": 100,
        "beta2": 0.99,
        "max-steps": 2000,
        "eval-every": 250,
    },
}
DEFAULT_PRESET = "quick"

MODEL_KEYS = {f.name.replace("_", "-") for f in dataclasses.fields(ModelConfig)} - {"vocab-size"}
_TRAIN_KEYS = {f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
# How a text corpus is tokenized for a new run (`vocab-size` is --vocab-size, BPE's size).
DATA_KEYS = {"tokenizer": str, "vocab-size": int, "val-files": int, "doc-separator": str}
KNOWN_KEYS = MODEL_KEYS | _TRAIN_KEYS | set(DATA_KEYS) | {"preset"}
# Keys whose values may be durations ("90s", "3m"), in a file as on the command line.
DURATIONS = ("max-time", "eval-interval")


def load_config_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory, not a TOML or JSON file")
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: use a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"--config {path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of keys")
    _check_keys(data, f"--config {path}")
    return data


def _check_keys(data: dict[str, Any], where: str) -> None:
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key.replace("_", "-"), sorted(KNOWN_KEYS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "keys are spelled as the flags"
            raise ConfigError(f"{where}: unknown key {key!r}", hint=hint)


def resolve(
    flags: dict[str, Any], config_file: Path | None = None, vocab_size: int = 256
) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """Merge preset, config file and flags (None = not given); return the configs and the merged
    key/value record (what `lmcli train` prints and saves)."""
    given = {k: v for k, v in flags.items() if v is not None}
    _check_keys(given, "flags")
    from_file = load_config_file(config_file) if config_file is not None else {}
    preset = given.get("preset") or from_file.get("preset") or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r} (presets: {', '.join(PRESETS)})")
    merged: dict[str, Any] = {**PRESETS[preset], **from_file, **given, "preset": preset}
    for key in DURATIONS:
        if isinstance(merged.get(key), str):
            merged[key] = parse_duration(merged[key], f"--{key}")
    for key, kind in DATA_KEYS.items():
        value = merged.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ConfigError(f"--{key} must be {TYPE_NAMES[kind]} (got {value!r})")
    # An explicit step budget alone replaces a preset's time budget, and vice versa.
    explicit = {**from_file, **given}
    if "max-steps" in explicit and "max-time" not in explicit:
        merged.pop("max-time", None)
    if "max-time" in explicit and "max-steps" not in explicit:
        merged.pop("max-steps", None)
    model, train = build_configs(merged, vocab_size)
    return model, train, merged


def build_configs(record: dict[str, Any], vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """Validated configs from flag-spelled keys (unknown keys, e.g. "preset", are ignored)."""
    model = ModelConfig(vocab_size=vocab_size, **_typed_kwargs(ModelConfig, MODEL_KEYS, record))
    train = TrainConfig(**_typed_kwargs(TrainConfig, _TRAIN_KEYS, record))
    model.validate()
    train.validate()
    return model, train


def _typed_kwargs(cls: type, keys: set[str], record: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        key.replace("-", "_"): checked_value(key, value, hints[key.replace("-", "_")])
        for key, value in record.items()
        if key in keys
    }


def as_record(model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    """The configs as flag-spelled keys (JSON-ready), for config.json and the console."""
    out = {k.replace("_", "-"): v for k, v in dataclasses.asdict(model).items()}
    out.update({k.replace("_", "-"): v for k, v in dataclasses.asdict(train).items()})
    return out
