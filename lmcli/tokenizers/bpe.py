"""Byte-level BPE: merges learned by rustbpe, encoding and decoding through tiktoken.

A trained tokenizer is saved as plain data: the pattern and vocabulary size in tokenizer.json and
the merge ranks in tiktoken's own text format (`base64(token bytes) rank`, one per line), so it
reloads with tiktoken alone:

    ranks = {base64.b64decode(t): int(r) for t, r in (l.split() for l in open(ranks_file))}
    enc = tiktoken.Encoding(name, pat_str=meta["pattern"], mergeable_ranks=ranks,
                            special_tokens=meta["special_tokens"])

We read and write the ranks file ourselves: tiktoken's `load_tiktoken_bpe` caches by path (a file
rewritten in place can come back stale) and its `dump_tiktoken_bpe` needs `blobfile`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import rustbpe
import tiktoken

from lmcli.errors import DownloadError, InputError

# GPT-4's pre-split pattern (cl100k_base): words with their leading space, numbers of up to three
# digits, punctuation runs, newlines and other whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
# rustbpe ingests this many pieces before each parallel counting pass: with 1 MB pieces that
# bounds the text it holds to ~4 MB (its default, 8192, would hold the whole corpus).
_TRAIN_BUFFER_PIECES = 4
_SURROGATE = re.compile("[\ud800-\udfff]")


class BpeTokenizer:
    """A tiktoken Encoding plus what is needed to save it."""

    kind = "bpe"

    def __init__(self, encoding: tiktoken.Encoding, name: str) -> None:
        self.encoding = encoding
        self.name = name

    @property
    def vocab_size(self) -> int:
        return int(self.encoding.n_vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint32); special-token text is encoded as ordinary text."""
        try:
            return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:
            raise InputError("text is not valid Unicode (it holds lone surrogates)") from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        return self.encoding.decode_bytes([int(i) for i in ids])

    def mergeable_ranks(self) -> dict[bytes, int]:
        return dict(self.encoding._mergeable_ranks)

    def to_json(self, ranks_file: str) -> dict[str, object]:
        return {
            "type": "bpe",
            "name": self.name,
            "pattern": self.encoding._pat_str,
            "vocab_size": self.vocab_size,
            "special_tokens": dict(self.encoding._special_tokens),
            "ranks_file": ranks_file,
        }


def train_bpe(texts: Iterable[str], vocab_size: int) -> BpeTokenizer:
    """Learn exactly `vocab_size - 256` merges on `texts` (GPT-4 pre-split)."""
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(
        iter(texts), vocab_size, buffer_size=_TRAIN_BUFFER_PIECES, pattern=GPT4_PATTERN
    )
    ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
    if len(ranks) != vocab_size:
        raise InputError(
            f"the corpus supports only {len(ranks) - 256} merges (vocab {len(ranks)}), "
            f"not --vocab-size {vocab_size}",
            hint=f"use --vocab-size {len(ranks)} or less, or a larger corpus",
        )
    return BpeTokenizer(
        tiktoken.Encoding(
            name=f"lmcli-bpe-{vocab_size}",
            pat_str=trainer.get_pattern(),
            mergeable_ranks=ranks,
            special_tokens={},
        ),
        name=f"bpe{vocab_size}",
    )


def known_pretrained(name: str) -> None:
    """Refuse a name that is neither ours nor a tiktoken encoding."""
    if name not in tiktoken.list_encoding_names():
        known = ", ".join(["char", "bpe", *sorted(tiktoken.list_encoding_names())])
        raise InputError(f"unknown tokenizer {name!r} (known: {known})")


def pretrained(name: str) -> BpeTokenizer:
    """A tiktoken encoding by name (fetched by tiktoken, or read from its cache)."""
    known_pretrained(name)
    try:
        encoding = tiktoken.get_encoding(name)
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors; ValueError: bad hash
        raise DownloadError(
            f"could not load tiktoken encoding {name!r}: offline or not cached "
            f"({type(exc).__name__})",
            hint="use --tokenizer bpe to train one on your corpus, or put the encoding's rank "
            "file in tiktoken's cache ($TIKTOKEN_CACHE_DIR) on a machine without internet",
        ) from exc
    return BpeTokenizer(encoding, name=name)


def write_ranks(path: Path, ranks: dict[bytes, int]) -> None:
    lines = (
        f"{base64.b64encode(token).decode('ascii')} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
    )
    path.write_text("".join(lines), encoding="ascii")


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{path}:{number}: not a tiktoken rank line")
        ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def from_json(meta: dict[str, object], directory: Path) -> BpeTokenizer:
    ranks_file = directory / str(meta["ranks_file"])
    if not ranks_file.is_file():
        raise InputError(f"missing BPE ranks file: {ranks_file}")
    special = meta.get("special_tokens") or {}
    if not isinstance(special, dict):
        raise InputError(f"{directory}: special_tokens must be an object")
    encoding = tiktoken.Encoding(
        name=f"lmcli-{meta['name']}",
        pat_str=str(meta["pattern"]),
        mergeable_ranks=read_ranks(ranks_file),
        special_tokens={str(k): int(v) for k, v in special.items()},
    )
    return BpeTokenizer(encoding, name=str(meta["name"]))
