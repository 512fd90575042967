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
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tiktoken

from lmcli.errors import DownloadError, InputError
from lmcli.files import plain_file_name
from lmcli.tokenizers.char import END_OF_TEXT

# GPT-4's pre-split pattern (cl100k_base): words with their leading space, numbers of up to three
# digits, punctuation runs, newlines and other whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
# rustbpe ingests this many pieces before each parallel counting pass: with 1 MB pieces that
# bounds the text it holds to ~4 MB (its default, 8192, would hold the whole corpus).
_TRAIN_BUFFER_PIECES = 4
# GPT-4's split pattern on a run of more than ~1,000,000 spaces or tabs exhausts the regex engine's
# backtracking limit (fancy-regex, in rustbpe and tiktoken alike) and panics. So runs longer than
# MAX_SPACE_RUN are cut into runs of at most that length before splitting, in training and
# encoding alike; text without such runs (all real prose and code) is untouched. The lookbehind
# starts a match only at the start of a run, which keeps the scan linear.
MAX_SPACE_RUN = 1 << 16
_LONG_RUN = re.compile(rf"(?<![^\S\r\n])[^\S\r\n]{{{MAX_SPACE_RUN}}}[^\S\r\n]*")


def bounded_runs(text: str) -> Iterator[str]:
    """`text` in consecutive parts, none holding a run of spaces longer than MAX_SPACE_RUN."""
    if _LONG_RUN.search(text) is None:
        yield text
        return
    start = 0
    for match in _LONG_RUN.finditer(text):
        if match.start() > start:
            yield text[start : match.start()]
        for i in range(match.start(), match.end(), MAX_SPACE_RUN):
            yield text[i : min(i + MAX_SPACE_RUN, match.end())]
        start = match.end()
    if start < len(text):
        yield text[start:]


class BpeTokenizer:
    """A tiktoken Encoding plus what is needed to save it."""

    kind = "bpe"

    def __init__(self, encoding: tiktoken.Encoding, name: str) -> None:
        self.encoding = encoding
        self.name = name

    @property
    def vocab_size(self) -> int:
        return int(self.encoding.n_vocab)

    @property
    def eot_id(self) -> int | None:
        """The id of `<|endoftext|>`, or None when the vocabulary has none."""
        return self.encoding._special_tokens.get(END_OF_TEXT)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint32); special-token text is encoded as ordinary text."""
        try:
            parts = [
                self.encoding.encode_to_numpy(part, allowed_special=set(), disallowed_special=())
                for part in bounded_runs(text)
            ]
        except UnicodeEncodeError:
            raise InputError("text is not valid Unicode (it holds lone surrogates)") from None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The bytes of the tokens; an id no token has (a gap in a pretrained vocabulary, which a
        model can still emit) decodes to U+FFFD's bytes."""
        tokens = [int(i) for i in ids]
        try:
            return self.encoding.decode_bytes(tokens)
        except KeyError:
            return b"".join(self._token_bytes(t) for t in tokens)

    def _token_bytes(self, token: int) -> bytes:
        try:
            return self.encoding.decode_single_token_bytes(token)
        except KeyError:
            return "\ufffd".encode()

    def fingerprint(self) -> str:
        """Equal for two tokenizers exactly when they encode and decode alike: the split
        pattern, the special tokens and every rank."""
        digest = hashlib.sha256(self.encoding._pat_str.encode())
        digest.update(json.dumps(self.encoding._special_tokens, sort_keys=True).encode())
        for token, rank in sorted(self.encoding._mergeable_ranks.items(), key=lambda t: t[1]):
            digest.update(b"%d:%s;" % (rank, base64.b64encode(token)))
        return digest.hexdigest()

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


def train_bpe(texts: Iterable[str], vocab_size: int, specials: Sequence[str] = ()) -> BpeTokenizer:
    """A vocabulary of exactly `vocab_size` tokens: 256 bytes, the merges learned on `texts`
    (GPT-4 pre-split), then `specials` (such as `<|endoftext|>`) with the last ids."""
    import rustbpe  # training only: encoding and decoding need tiktoken alone

    ordinary = vocab_size - len(specials)
    if ordinary < 257:
        raise InputError(
            f"--vocab-size {vocab_size} leaves no merge beside 256 bytes and "
            f"{len(specials)} special token{'s' if len(specials) != 1 else ''}",
            hint=f"use --vocab-size {257 + len(specials)} or more",
        )
    trainer = rustbpe.Tokenizer()
    parts = (part for text in texts for part in bounded_runs(text))
    trainer.train_from_iterator(
        parts, ordinary, buffer_size=_TRAIN_BUFFER_PIECES, pattern=GPT4_PATTERN
    )
    ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
    if len(ranks) != ordinary:
        most = len(ranks) + len(specials)
        smaller = f"use --vocab-size {most} or less, or " if len(ranks) > 256 else "use "
        raise InputError(
            f"the corpus supports only {len(ranks) - 256} merges (vocab {most}), "
            f"not --vocab-size {vocab_size}",
            hint=smaller + "more text (a larger corpus, or a larger --bpe-train-mb)",
        )
    return BpeTokenizer(
        tiktoken.Encoding(
            name=f"lmcli-bpe-{vocab_size}",
            pat_str=trainer.get_pattern(),
            mergeable_ranks=ranks,
            special_tokens={token: ordinary + i for i, token in enumerate(specials)},
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


# cl100k_base's rank file is 1.7 MB; o200k_base's 3.6 MB.
MAX_RANKS_BYTES = 256 << 20


def read_ranks(path: Path) -> dict[bytes, int]:
    """Ranks from a tiktoken rank file, refused unless tiktoken can use them: valid base64,
    distinct ranks, and every single byte a token (so that any text encodes)."""
    if path.stat().st_size > MAX_RANKS_BYTES:
        raise InputError(f"{path} is too large to be a BPE rank file")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a tiktoken rank file (not ASCII)") from None
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{path}:{number}: not a tiktoken rank line")
        try:
            token = base64.b64decode(parts[0], validate=True)
        except binascii.Error:
            raise InputError(f"{path}:{number}: the token is not valid base64") from None
        if not token or token in ranks:
            raise InputError(f"{path}:{number}: an empty or repeated token")
        ranks[token] = int(parts[1])
    if len(set(ranks.values())) != len(ranks):
        raise InputError(f"{path}: two tokens share one rank")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise InputError(
            f"{path}: byte {missing[0]:#04x} is not a token, so not every text encodes"
        )
    return ranks


def from_json(meta: dict[str, object], directory: Path) -> BpeTokenizer:
    where = directory / "tokenizer.json"
    ranks_file = directory / plain_file_name(meta.get("ranks_file"), where, "ranks_file")
    if not ranks_file.is_file():
        raise InputError(f"missing BPE ranks file: {ranks_file}")
    name, pattern = meta.get("name"), meta.get("pattern")
    if not isinstance(name, str) or not isinstance(pattern, str):
        raise InputError(f"{where}: name and pattern must be strings")
    ranks = read_ranks(ranks_file)
    special = meta.get("special_tokens") or {}
    if not isinstance(special, dict) or not all(
        isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool)
        for k, v in special.items()
    ):
        raise InputError(f"{where}: special_tokens must map strings to token ids")
    ids = set(ranks.values())
    for token, rank in special.items():
        if rank < 0 or rank in ids:
            raise InputError(f"{where}: special token {token!r} has a taken or negative id {rank}")
        ids.add(rank)
    try:
        encoding = tiktoken.Encoding(
            name=f"lmcli-{name}", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special
        )
    except ValueError as exc:  # the split pattern does not compile
        raise InputError(f"{where}: the split pattern is not usable ({str(exc)[:120]})") from None
    vocab_size = meta.get("vocab_size")
    if vocab_size is not None and vocab_size != encoding.n_vocab:
        raise InputError(
            f"{where}: vocab_size {vocab_size!r} but the ranks hold {encoding.n_vocab}"
        )
    return BpeTokenizer(encoding, name=name)
