"""Token files on disk: `train.bin` / `val.bin` (raw little-endian uint16 or uint32, memory-mapped
by training) and `meta.json`, which says how to read them and what text they came from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.errors import InputError

META_FILE = "meta.json"
META_SCHEMA_VERSION = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id fits (vocab ≤ 65,536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True)
class SplitMeta:
    file: str
    tokens: int
    bytes: int  # UTF-8 bytes of the text the tokens decode to: the denominator of bits per byte
    chars: int


@dataclass(frozen=True)
class TokenMeta:
    lmcli_version: str
    tokenizer: str  # "char", "bpe4096", "gpt2", ...
    tokenizer_file: str
    vocab_size: int
    dtype: str  # numpy dtype string, "<u2" or "<u4"
    splits: dict[str, SplitMeta]
    corpus: dict[str, Any]  # source, sha256, bytes
    text: dict[str, Any]  # normalisation: mode, bom_stripped, crlf, cr, invalid_bytes
    val_fraction: float
    schema_version: int = field(default=META_SCHEMA_VERSION)

    def bytes_per_token(self, split: str) -> float:
        s = self.splits[split]
        return s.bytes / max(s.tokens, 1)

    def save(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=1, ensure_ascii=False)
        (directory / META_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TokenMeta:
        path = directory / META_FILE
        if not path.is_file():
            raise InputError(f"{directory} is not a token directory (no {META_FILE})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("schema_version") != META_SCHEMA_VERSION:
                raise InputError(f"{path}: unsupported schema {raw.get('schema_version')!r}")
            raw["splits"] = {k: SplitMeta(**v) for k, v in raw["splits"].items()}
            return cls(**raw)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{path} is not a valid lmcli meta.json ({exc})") from None


def open_tokens(directory: Path, split: str) -> np.memmap[Any, np.dtype[Any]]:
    """Memory-map one split's token file (read-only)."""
    meta = TokenMeta.load(directory)
    info = meta.splits[split]
    path = directory / info.file
    dtype = np.dtype(meta.dtype)
    if not path.is_file() or path.stat().st_size != info.tokens * dtype.itemsize:
        raise InputError(f"{path} is missing or truncated (expected {info.tokens:,} tokens)")
    return np.memmap(path, dtype=dtype, mode="r")
