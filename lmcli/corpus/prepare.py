"""`lmcli tokenize`: a corpus in, a token directory out (train.bin, val.bin, tokenizer, meta.json).

The corpus (one file or many: see documents.py) is streamed in pieces (see text.py), so memory
stays bounded whatever its size. The output is written into a temporary sibling directory and
renamed into place at the end: a failure or Ctrl-C leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmcli import __version__
from lmcli.config import TokenizeConfig
from lmcli.corpus.documents import (
    BLANK_LINE,
    END_OF_TEXT,
    EOT,
    Corpus,
    Piece,
    Segment,
    iter_pieces,
    locate_corpus,
    open_corpus,
    read_corpus,
    split_corpus,
)
from lmcli.corpus.text import TextStats
from lmcli.corpus.tokenfiles import (
    SPLITS,
    TOKEN_FILES,
    SplitMeta,
    TokenMeta,
    is_token_dir,
    token_dtype,
)
from lmcli.errors import InputError
from lmcli.files import make_dir, sweep_stale
from lmcli.tokenizers import CharTokenizer, Tokenizer, load_tokenizer, save_tokenizer
from lmcli.tokenizers.bpe import known_pretrained, pretrained, train_bpe
from lmcli.tokenizers.char import END_OF_TEXT as EOT_TOKEN

# on_progress(stage, done, total): done and total are bytes of the stage's input.
OnProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TokenizeResult:
    out_dir: Path
    corpus: str
    sha256: str
    tokenizer: str
    vocab_size: int
    dtype: str
    chars: int
    bytes: int
    tokens: int
    train_tokens: int
    val_tokens: int
    documents: int  # text files read (1 for a file)
    skipped: list[dict[str, str]]  # files of a directory or glob left out, and why
    separator: str | None  # between documents: "eot", "blank-line" or None
    bytes_per_token: float
    text_changes: dict[str, Any]
    tokenizer_seconds: float  # BPE training, char scan or encoding load
    bpe_train_mb: float | None  # text the BPE merges were learned on (≈, whole pieces)
    encode_seconds: float
    encode_mb_per_s: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def _noop(stage: str, done: int, total: int) -> None:
    pass


def default_out_dir(corpus_name: str, tokenizer: str) -> Path:
    return Path("tokens") / f"{corpus_name}-{tokenizer}"


def tokenize_corpus(cfg: TokenizeConfig, on_progress: OnProgress = _noop) -> TokenizeResult:
    cfg.validate()
    if cfg.tokenizer not in ("char", "bpe"):
        known_pretrained(cfg.tokenizer)  # fail on an unknown name before any download
    started = time.perf_counter()
    fixed = load_tokenizer(cfg.tokenizer_from) if cfg.tokenizer_from is not None else None
    spec = fixed.name if fixed is not None else cfg.tokenizer_spec
    located = locate_corpus(
        cfg.corpus, cfg.data_dir, lambda done, total: on_progress("download", done, total)
    )
    out = cfg.out if cfg.out is not None else default_out_dir(located.name, spec)
    check_output_dir(out, cfg.force, [path for path, _ in located.files])
    corpus = read_corpus(located, on_progress)
    segments = split_corpus(corpus, cfg.val_fraction, cfg.val_files)
    separator = doc_separator(cfg, corpus, fixed)
    lengths = {name: sum(s.end - s.start for s in segs) for name, segs in segments.items()}
    dropped = Dropped("")

    def pieces(name: str, label: str, stats: TextStats | None = None) -> Iterator[Piece]:
        stats = stats if stats is not None else TextStats()
        stream = iter_pieces(
            corpus,
            segments[name],
            separator,
            exact=cfg.exact,
            chunk_bytes=cfg.chunk_bytes,
            stats=stats,
            on_bytes=lambda done: on_progress(label, done, lengths[name]),
        )
        return dropped.apply(stream, stats) if dropped.chars else stream

    t0 = time.perf_counter()
    if fixed is None:
        tokenizer = _build_tokenizer(cfg, pieces, lengths["train"], separator == EOT)
    else:
        tokenizer = fixed
        unknown = unknown_chars(fixed, (pieces(name, f"scan {name}") for name in SPLITS))
        if unknown and not cfg.drop_unknown:
            raise unknown_error(unknown, corpus.source, str(cfg.tokenizer_from))
        dropped.chars = unknown
    tokenizer_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    record = {**corpus.record(), "separator": separator}
    if cfg.val_files is not None:
        record["val_files"] = cfg.val_files
    if cfg.tokenizer_from is not None:
        record["tokenizer_from"] = str(cfg.tokenizer_from.absolute())
    splits, totals, meta = _write_token_dir(out, tokenizer, spec, pieces, cfg, record, dropped)
    encode_seconds = time.perf_counter() - t0
    tokens = splits["train"].tokens + splits["val"].tokens
    return TokenizeResult(
        out_dir=out,
        corpus=corpus.source,
        sha256=corpus.sha256,
        tokenizer=meta.tokenizer,
        vocab_size=tokenizer.vocab_size,
        dtype=np.dtype(meta.dtype).name,
        chars=totals.chars,
        bytes=totals.bytes,
        tokens=tokens,
        train_tokens=splits["train"].tokens,
        val_tokens=splits["val"].tokens,
        documents=len(corpus.documents),
        skipped=[{"name": s.name, "why": s.why} for s in corpus.skipped],
        separator=separator,
        bytes_per_token=totals.bytes / tokens,
        text_changes=meta.text,
        tokenizer_seconds=tokenizer_seconds,
        bpe_train_mb=(
            min(lengths["train"], cfg.bpe_train_mb * 1e6) / 1e6 if cfg.tokenizer == "bpe" else None
        ),
        encode_seconds=encode_seconds,
        encode_mb_per_s=corpus.bytes / 1e6 / max(encode_seconds, 1e-9),
        seconds=time.perf_counter() - started,
    )


def doc_separator(cfg: TokenizeConfig, corpus: Corpus, fixed: Tokenizer | None) -> str | None:
    """What follows each document of a corpus of several: `<|endoftext|>` (EOT) or a blank
    line; None for one document, or when asked for none. `auto` is a blank line for char (its
    vocabulary stays the text's characters), EOT for BPE and pretrained encodings; with a given
    tokenizer, EOT when it has the token."""
    if len(corpus.documents) == 1 or cfg.doc_separator == "none":
        return None
    if fixed is not None and cfg.doc_separator == EOT and fixed.eot_id is None:
        raise InputError(
            f"the tokenizer of {cfg.tokenizer_from} has no {EOT_TOKEN} token to separate documents",
            hint="pass --doc-separator blank-line (or none)",
        )
    if cfg.doc_separator == "auto":
        if fixed is not None:
            return EOT if fixed.eot_id is not None else BLANK_LINE
        return BLANK_LINE if cfg.tokenizer == "char" else EOT
    return cfg.doc_separator


@dataclass
class Dropped:
    """Characters a given char vocabulary lacks, left out of the text (--drop-unknown)."""

    chars: str
    count: int = 0

    def apply(self, pieces: Iterator[Piece], stats: TextStats) -> Iterator[Piece]:
        """The pieces without those characters; `stats` counts only the text kept."""
        table = dict.fromkeys(map(ord, self.chars))
        for piece in pieces:
            if isinstance(piece, str):
                kept = piece.translate(table)
                if len(kept) != len(piece):
                    self.count += len(piece) - len(kept)
                    stats.chars -= len(piece) - len(kept)
                    stats.bytes -= len(piece.encode()) - len(kept.encode())
                piece = kept
            yield piece


def unknown_chars(tokenizer: Tokenizer, streams: Iterable[Iterator[Piece]]) -> str:
    """The characters of the streams a char vocabulary lacks (a BPE one encodes anything)."""
    if not isinstance(tokenizer, CharTokenizer):
        return ""
    seen: set[str] = set()
    for stream in streams:
        for piece in stream:
            if isinstance(piece, str):
                seen.update(piece)
    return "".join(sorted(seen - set(tokenizer.chars)))


def unknown_error(unknown: str, source: str, vocabulary_of: str) -> InputError:
    shown = " ".join(repr(c) for c in unknown[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return InputError(
        f"{source} has {len(unknown)} character{'s' if len(unknown) != 1 else ''} the char "
        f"vocabulary of {vocabulary_of} lacks: {shown}{more}",
        hint="pass --drop-unknown to leave them out of the text",
    )


@dataclass(frozen=True)
class EncodedText:
    """A whole corpus encoded in memory with a given tokenizer (for `lmcli eval`)."""

    tokens: np.ndarray
    bytes: int  # UTF-8 bytes of the text the tokens decode to
    documents: int
    dropped: int  # characters left out (drop_unknown)


def encode_text(
    spec: str,
    tokenizer: Tokenizer,
    vocabulary_of: str,
    *,
    drop_unknown: bool = False,
    data_dir: Path | None = None,
    exact: bool = False,
) -> EncodedText:
    """All of a corpus (a file, folder, glob or named corpus) encoded with `tokenizer`, its
    documents separated as `lmcli tokenize --tokenizer-from` would; characters a char
    vocabulary lacks are refused, listed, or left out with `drop_unknown`."""
    corpus = open_corpus(spec, data_dir)
    segments = [Segment(i, 0, d.bytes) for i, d in enumerate(corpus.documents)]
    separator = doc_separator(TokenizeConfig(corpus=spec), corpus, tokenizer)
    stats = TextStats()

    def stream() -> Iterator[Piece]:
        return iter_pieces(corpus, segments, separator, exact=exact, stats=stats)

    dropped = Dropped(unknown_chars(tokenizer, [stream()]))
    if dropped.chars and not drop_unknown:
        raise unknown_error(dropped.chars, corpus.source, vocabulary_of)
    stats = TextStats()
    pieces = dropped.apply(stream(), stats) if dropped.chars else stream()
    parts = list(_encode(tokenizer, pieces, workers=1))
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    return EncodedText(tokens, stats.bytes, len(corpus.documents), dropped.count)


def _write_token_dir(
    out: Path,
    tokenizer: Tokenizer,
    spec: str,
    pieces: Callable[[str, str, TextStats | None], Iterator[Piece]],
    cfg: TokenizeConfig,
    corpus: dict[str, Any],
    dropped: Dropped,
) -> tuple[dict[str, SplitMeta], TextStats, TokenMeta]:
    """Encode both splits and write the token directory into a temporary folder beside `out`,
    renamed into place when whole."""
    parent, name = _parent_and_name(out)
    make_dir(parent, "the output's folder")
    sweep_stale(parent, prefix=name)  # what a killed tokenize left there
    tmp = parent / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    make_dir(tmp, f"a temporary folder for {out} in")
    workers = cfg.threads or min(os.cpu_count() or 1, 4)
    try:
        splits, totals = _write_splits(tokenizer, pieces, workers, tmp, corpus["source"])
        text: dict[str, Any] = {
            "mode": "exact" if cfg.exact else "normalize",
            "bom_stripped": totals.bom_stripped,
            "crlf_to_lf": totals.crlf,
            "cr_to_lf": totals.cr,
            "invalid_bytes_replaced": totals.invalid_bytes,
        }
        if dropped.chars:  # counted over both splits, once both are written
            text["unknown_dropped"] = {"chars": dropped.chars, "count": dropped.count}
        meta = TokenMeta(
            lmcli_version=__version__,
            tokenizer=spec,
            tokenizer_file=save_tokenizer(tokenizer, tmp)[0],
            vocab_size=tokenizer.vocab_size,
            dtype=token_dtype(tokenizer.vocab_size).str,
            splits=splits,
            corpus=corpus,
            text=text,
            val_fraction=cfg.val_fraction,
        )
        meta.save(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return splits, totals, meta


def _parent_and_name(out: Path) -> tuple[Path, str]:
    """The folder holding `out` and its name, also for `.` and paths ending in `..`."""
    resolved = out.absolute().resolve()
    return resolved.parent, resolved.name


def check_output_dir(out: Path, force: bool, corpus: list[Path]) -> None:
    """`out` may be new, or (with --force) a token directory lmcli made that holds no file of
    the corpus: --force never deletes anything else."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory", hint="choose another --out")
    if not force:
        raise InputError(
            f"output directory exists: {out}",
            hint="pass --force to replace it, or choose another --out",
        )
    inside = [p for p in corpus if p.absolute().resolve().is_relative_to(out.absolute().resolve())]
    if inside:
        raise InputError(
            f"--force would delete {out}, which holds the corpus {inside[0]}",
            hint="write the tokens to another folder (--out)",
        )
    if not is_token_dir(out):
        others = sorted(p.name for p in out.iterdir() if p.name not in TOKEN_FILES)
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"--force replaces only a token directory made by lmcli tokenize; {out} is not one"
            + (f" (it holds {listed})" if others else ""),
            hint="choose another --out, or empty that folder yourself",
        )


def _write_splits(
    tokenizer: Tokenizer,
    pieces: Callable[[str, str, TextStats | None], Iterator[Piece]],
    workers: int,
    tmp: Path,
    source: str,
) -> tuple[dict[str, SplitMeta], TextStats]:
    """Encode both splits into tmp/{train,val}.bin; their descriptions and the text's stats."""
    dtype = token_dtype(tokenizer.vocab_size)
    splits: dict[str, SplitMeta] = {}
    totals = TextStats()
    for name in SPLITS:
        stats = TextStats()
        n_tokens = 0
        digest = hashlib.sha256()
        path = tmp / f"{name}.bin"
        with path.open("wb") as f:
            for ids in _encode(tokenizer, pieces(name, f"encode {name}", stats), workers):
                data = ids.astype(dtype, copy=False).tobytes()
                try:
                    f.write(data)
                except OSError as exc:  # a full disk: name the file, not "(unnamed)"
                    raise OSError(exc.errno, exc.strerror, str(path)) from None
                digest.update(data)
                n_tokens += len(ids)
        if n_tokens == 0:
            raise InputError(f"the {name} split of {source} holds no text")
        splits[name] = SplitMeta(f"{name}.bin", n_tokens, bytes=stats.bytes, chars=stats.chars,
                                 sha256=digest.hexdigest())  # fmt: skip
        totals.add(stats)
    return splits, totals


def _build_tokenizer(
    cfg: TokenizeConfig,
    pieces: Callable[[str, str], Iterator[Piece]],
    train_bytes: int,
    with_eot: bool,
) -> Tokenizer:
    specials = [EOT_TOKEN] if with_eot else []
    if cfg.tokenizer == "char":
        # The vocabulary covers both splits: a character seen only in val must still encode.
        texts = (p for name in SPLITS for p in pieces(name, f"scan {name}") if isinstance(p, str))
        return CharTokenizer.from_texts(texts, specials)
    if cfg.tokenizer == "bpe":
        # Merges are learned on the training split only, on an even sample of it if it is large.
        texts = (p for p in pieces("train", "train BPE") if isinstance(p, str))
        sample = _even_sample(texts, train_bytes, cfg.bpe_train_mb * 1e6)
        return train_bpe(sample, cfg.bpe_vocab_size, specials)
    encoding = pretrained(cfg.tokenizer)
    if with_eot and encoding.eot_id is None:
        raise InputError(
            f"the {cfg.tokenizer} encoding has no {EOT_TOKEN} token to separate documents",
            hint="pass --doc-separator blank-line (or none)",
        )
    return encoding


def _even_sample(pieces: Iterator[str], total: int, budget: float) -> Iterator[str]:
    """Pieces spread evenly over the stream, about `budget` bytes of `total` in all."""
    ratio = min(1.0, budget / max(total, 1))
    seen = kept = 0.0
    for piece in pieces:
        size = len(piece)  # characters: close enough to bytes for choosing
        seen += size
        if kept + size <= seen * ratio + size / 2:
            kept += size
            yield piece


def _encode(tokenizer: Tokenizer, pieces: Iterator[Piece], workers: int) -> Iterator[np.ndarray]:
    """Encoded pieces, in order, with up to `workers` pieces encoding at once; END_OF_TEXT is
    the tokenizer's <|endoftext|> id.

    Reading and normalising the next pieces overlaps with encoding; at most workers + 1 pieces
    are in flight, so memory stays bounded.
    """

    def encode(piece: Piece) -> np.ndarray:
        if piece is END_OF_TEXT:
            return np.array([tokenizer.eot_id], dtype=np.uint32)
        assert isinstance(piece, str)
        return tokenizer.encode(piece)

    if workers == 1:
        yield from map(encode, pieces)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for piece in pieces:
            pending.append(pool.submit(encode, piece))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`; an existing `out` (allowed by --force) is removed only after."""
    if out.exists():
        trash = out.with_name(f".{out.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        out.rename(trash)
        new.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        new.rename(out)
