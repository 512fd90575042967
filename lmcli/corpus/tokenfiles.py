"""Token files on disk: `train.bin` / `val.bin` (raw little-endian uint16 or uint32, memory-mapped
by training) and `meta.json`, which says how to read them and what text they came from.

A token directory holds these files and nothing else (`TOKEN_FILES`): that is how lmcli tells a
folder it made from one it did not, and it only ever replaces (`tokenize --force`) the former.
Every field of meta.json is checked on load, and the token ids against the vocabulary before
training reads them (`verify_tokens`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.errors import InputError
from lmcli.files import FORMAT_VERSION, plain_file_name, read_json_file, readable_format

META_FILE = "meta.json"
SPLITS = ("train", "val")
DTYPES = ("<u2", "<u4")
# Everything `lmcli tokenize` writes into a token directory.
TOKEN_FILES = frozenset({"train.bin", "val.bin", "tokenizer.json", "tokenizer.tiktoken", META_FILE})
_VERIFY_BLOCK = 1 << 22  # tokens per block when scanning a split


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id fits (vocab ≤ 65,536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True)
class SplitMeta:
    file: str
    tokens: int
    bytes: int  # UTF-8 bytes of the text the tokens decode to: the denominator of bits per byte
    chars: int
    # sha256 of the token file as written (absent in token directories of lmcli before 0.2).
    sha256: str | None = None


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
    schema_version: int = field(default=FORMAT_VERSION)

    def bytes_per_token(self, split: str) -> float:
        s = self.splits[split]
        return s.bytes / max(s.tokens, 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=True) + "\n"

    def save(self, directory: Path) -> None:
        (directory / META_FILE).write_text(self.to_json(), encoding="ascii")

    @classmethod
    def load(cls, directory: Path) -> TokenMeta:
        path = directory / META_FILE
        if not path.is_file():
            raise InputError(f"{directory} is not a token directory (no {META_FILE})")
        raw = read_json_file(path)
        if not readable_format(raw.get("schema_version")):
            raise InputError(f"{path}: unsupported schema {raw.get('schema_version')!r}")
        return _checked_meta(raw, path)


def _int(value: object, path: Path, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{path}: {key} must be an integer of at least {minimum} (got {value!r})")
    return value


def _checked_meta(raw: dict[str, Any], path: Path) -> TokenMeta:
    """A TokenMeta from meta.json's fields, each checked for its type and range."""
    known = {f for f in TokenMeta.__dataclass_fields__}
    if set(raw) - known or {"tokenizer", "vocab_size", "dtype", "splits"} - set(raw):
        raise InputError(f"{path} is not an lmcli meta.json (its keys are not lmcli's)")
    vocab = _int(raw["vocab_size"], path, "vocab_size", 1)
    if raw["dtype"] not in DTYPES:
        raise InputError(f"{path}: dtype must be one of {', '.join(DTYPES)} (got {raw['dtype']!r})")
    if vocab > np.iinfo(np.dtype(raw["dtype"])).max + 1:
        raise InputError(f"{path}: a vocabulary of {vocab:,} does not fit dtype {raw['dtype']}")
    splits = raw["splits"]
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        raise InputError(f"{path}: splits must be exactly {' and '.join(SPLITS)}")
    checked: dict[str, SplitMeta] = {}
    for name, split in splits.items():
        if not isinstance(split, dict) or set(split) - set(SplitMeta.__dataclass_fields__):
            raise InputError(f"{path}: split {name!r} is not a split description")
        tokens = _int(split.get("tokens"), path, f"splits.{name}.tokens", 0)
        digest = split.get("sha256")
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
            raise InputError(f"{path}: splits.{name}.sha256 is not a sha256")
        checked[name] = SplitMeta(
            file=plain_file_name(split.get("file"), path, f"splits.{name}.file"),
            tokens=tokens,
            # Bits per byte divide by the bytes: a split of tokens holds at least one byte.
            bytes=_int(split.get("bytes"), path, f"splits.{name}.bytes", 1 if tokens else 0),
            chars=_int(split.get("chars"), path, f"splits.{name}.chars", 0),
            sha256=digest,
        )
    for key, kind in (("tokenizer", str), ("lmcli_version", str), ("corpus", dict),
                      ("text", dict), ("val_fraction", float | int)):  # fmt: skip
        if key in raw and not isinstance(raw[key], kind):
            raise InputError(f"{path}: {key} has the wrong type ({type(raw[key]).__name__})")
    return TokenMeta(
        lmcli_version=raw.get("lmcli_version", "?"),
        tokenizer=raw["tokenizer"],
        tokenizer_file=plain_file_name(
            raw.get("tokenizer_file", "tokenizer.json"), path, "tokenizer_file"
        ),
        vocab_size=vocab,
        dtype=raw["dtype"],
        splits=checked,
        corpus=raw.get("corpus", {}),
        text=raw.get("text", {}),
        val_fraction=float(raw.get("val_fraction", 0.0)),
    )


def is_token_dir(directory: Path) -> bool:
    """True for a folder `lmcli tokenize` made: a valid meta.json and only lmcli's token files."""
    try:
        TokenMeta.load(directory)
        names = {p.name for p in directory.iterdir()}
    except (InputError, OSError):
        return False
    return names <= TOKEN_FILES


def open_tokens(directory: Path, split: str) -> np.ndarray[Any, np.dtype[Any]]:
    """Memory-map one split's token file (read-only; an empty split is an empty array)."""
    meta = TokenMeta.load(directory)
    info = meta.splits[split]
    path = directory / info.file
    dtype = np.dtype(meta.dtype)
    if not path.is_file() or path.stat().st_size != info.tokens * dtype.itemsize:
        raise InputError(f"{path} is missing or truncated (expected {info.tokens:,} tokens)")
    if info.tokens == 0:
        return np.zeros(0, dtype)  # numpy cannot map an empty file
    return np.memmap(path, dtype=dtype, mode="r")


def verify_tokens(directory: Path, meta: TokenMeta) -> None:
    """Every id of both splits below the vocabulary size, and each file's sha256 the one
    recorded when it was written: a token file changed or damaged since is refused."""
    for split in SPLITS:
        tokens = open_tokens(directory, split)
        info = meta.splits[split]
        digest = hashlib.sha256()
        top = -1
        for start in range(0, len(tokens), _VERIFY_BLOCK):
            block = np.asarray(tokens[start : start + _VERIFY_BLOCK])
            digest.update(block.tobytes())
            top = max(top, int(block.max()))
        if top >= meta.vocab_size:
            raise InputError(
                f"{directory / info.file} holds token id {top}, outside the vocabulary of "
                f"{meta.vocab_size} in {directory / META_FILE}",
                hint="tokenize the corpus again (lmcli tokenize … --force)",
            )
        if info.sha256 is not None and digest.hexdigest() != info.sha256:
            raise InputError(
                f"{directory / info.file} is not the file lmcli wrote (its sha256 differs from "
                f"the one in {META_FILE})",
                hint="tokenize the corpus again (lmcli tokenize … --force)",
            )
