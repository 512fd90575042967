"""`lmcli tokenize`: a corpus in, a token directory out (train.bin, val.bin, tokenizer, meta.json).

The corpus is streamed in pieces (see text.py), so memory stays bounded whatever its size. The
output is written into a temporary sibling directory and renamed into place at the end: a
failure or Ctrl-C leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmcli import __version__
from lmcli.config import TokenizeConfig
from lmcli.corpus.named import resolve_corpus, sha256_file
from lmcli.corpus.text import TextStats, check_text_file, find_split, iter_text
from lmcli.corpus.tokenfiles import SPLITS, SplitMeta, TokenMeta, token_dtype
from lmcli.errors import InputError
from lmcli.tokenizers import CharTokenizer, Tokenizer, pretrained, save_tokenizer, train_bpe
from lmcli.tokenizers.bpe import known_pretrained

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
    corpus = resolve_corpus(
        cfg.corpus, cfg.data_dir, lambda done, total: on_progress("download", done, total)
    )
    size = check_text_file(corpus.path)
    out = cfg.out if cfg.out is not None else default_out_dir(corpus.name, cfg.tokenizer_spec)
    if out.exists() and not (cfg.force and out.is_dir()):
        raise InputError(
            f"output directory exists: {out}",
            hint="pass --force to replace it, or choose another --out",
        )
    split = find_split(corpus.path, size, cfg.val_fraction)
    if not 0 < split < size:
        raise InputError(
            f"{corpus.path} ({size:,} bytes) is too small to hold out --val-fraction "
            f"{cfg.val_fraction} for validation",
            hint="use a larger corpus or a larger --val-fraction",
        )
    digest = sha256_file(corpus.path, lambda done: on_progress("sha256", done, size))
    ranges = {"train": (0, split), "val": (split, size)}

    def pieces(name: str, label: str, stats: TextStats | None = None) -> Iterator[str]:
        start, end = ranges[name]
        return iter_text(
            corpus.path,
            start,
            end,
            exact=cfg.exact,
            chunk_bytes=cfg.chunk_bytes,
            stats=stats,
            on_bytes=lambda done: on_progress(label, done, end - start),
        )

    t0 = time.perf_counter()
    tokenizer = _build_tokenizer(cfg, pieces, train_bytes=split)
    tokenizer_seconds = time.perf_counter() - t0

    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    workers = cfg.threads or min(os.cpu_count() or 1, 4)
    try:
        t0 = time.perf_counter()
        dtype = token_dtype(tokenizer.vocab_size)
        splits: dict[str, SplitMeta] = {}
        totals = TextStats()
        for name in SPLITS:
            stats = TextStats()
            n_tokens = 0
            with (tmp / f"{name}.bin").open("wb") as f:
                for ids in _encode(tokenizer, pieces(name, f"encode {name}", stats), workers):
                    ids.astype(dtype, copy=False).tofile(f)
                    n_tokens += len(ids)
            if n_tokens == 0:
                raise InputError(f"the {name} split of {corpus.path} holds no text")
            splits[name] = SplitMeta(f"{name}.bin", n_tokens, bytes=stats.bytes, chars=stats.chars)
            totals.add(stats)
        encode_seconds = time.perf_counter() - t0
        meta = TokenMeta(
            lmcli_version=__version__,
            tokenizer=cfg.tokenizer_spec,
            tokenizer_file=save_tokenizer(tokenizer, tmp)[0],
            vocab_size=tokenizer.vocab_size,
            dtype=dtype.str,
            splits=splits,
            corpus={"source": corpus.source, "sha256": digest, "bytes": size},
            text={
                "mode": "exact" if cfg.exact else "normalize",
                "bom_stripped": totals.bom_stripped,
                "crlf_to_lf": totals.crlf,
                "cr_to_lf": totals.cr,
                "invalid_bytes_replaced": totals.invalid_bytes,
            },
            val_fraction=cfg.val_fraction,
        )
        meta.save(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tokens = splits["train"].tokens + splits["val"].tokens
    return TokenizeResult(
        out_dir=out,
        corpus=corpus.source,
        sha256=digest,
        tokenizer=meta.tokenizer,
        vocab_size=tokenizer.vocab_size,
        dtype=str(dtype.name),
        chars=totals.chars,
        bytes=totals.bytes,
        tokens=tokens,
        train_tokens=splits["train"].tokens,
        val_tokens=splits["val"].tokens,
        bytes_per_token=totals.bytes / tokens,
        text_changes=meta.text,
        tokenizer_seconds=tokenizer_seconds,
        bpe_train_mb=min(split, cfg.bpe_train_mb * 1e6) / 1e6 if cfg.tokenizer == "bpe" else None,
        encode_seconds=encode_seconds,
        encode_mb_per_s=size / 1e6 / max(encode_seconds, 1e-9),
        seconds=time.perf_counter() - started,
    )


def _build_tokenizer(
    cfg: TokenizeConfig, pieces: Callable[[str, str], Iterator[str]], train_bytes: int
) -> Tokenizer:
    if cfg.tokenizer == "char":
        # The vocabulary covers both splits: a character seen only in val must still encode.
        return CharTokenizer.from_texts(p for name in SPLITS for p in pieces(name, f"scan {name}"))
    if cfg.tokenizer == "bpe":
        # Merges are learned on the training split only, on an even sample of it if it is large.
        sample = _even_sample(pieces("train", "train BPE"), train_bytes, cfg.bpe_train_mb * 1e6)
        return train_bpe(sample, cfg.bpe_vocab_size)
    return pretrained(cfg.tokenizer)


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


def _encode(tokenizer: Tokenizer, pieces: Iterator[str], workers: int) -> Iterator[np.ndarray]:
    """Encoded pieces, in order, with up to `workers` pieces encoding at once.

    Reading and normalising the next pieces overlaps with encoding; at most workers + 1 pieces
    are in flight, so memory stays bounded.
    """
    if workers == 1:
        yield from map(tokenizer.encode, pieces)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for piece in pieces:
            pending.append(pool.submit(tokenizer.encode, piece))
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
