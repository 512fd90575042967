from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmcli.config import TokenizeConfig
from lmcli.corpus.prepare import tokenize_corpus
from lmcli.corpus.tokenfiles import TokenMeta, open_tokens, token_dtype
from lmcli.errors import InputError
from lmcli.tokenizers import load_tokenizer


def test_char_on_tiny_shakespeare(shakespeare_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "char"
    stages: set[str] = set()
    result = tokenize_corpus(
        TokenizeConfig(corpus=str(shakespeare_path), out=out),
        lambda stage, done, total: stages.add(stage),
    )
    assert result.vocab_size == 65
    assert result.tokens == 1_115_394
    assert result.train_tokens + result.val_tokens == 1_115_394
    assert {"check", "scan train", "encode train", "encode val"} <= stages
    meta = TokenMeta.load(out)
    assert meta.dtype == "<u2"
    assert meta.splits["train"].bytes + meta.splits["val"].bytes == 1_115_394
    assert meta.corpus["sha256"] == result.sha256
    assert meta.lmcli_version
    tok = load_tokenizer(out)
    text = shakespeare_path.read_text(encoding="utf-8")
    train, val = open_tokens(out, "train"), open_tokens(out, "val")
    assert tok.decode(train) + tok.decode(val) == text
    assert tok.decode(val[:30]).startswith(text[len(tok.decode(train)) :][:30])
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "tokenizer.json", "train.bin", "val.bin",
    ]  # fmt: skip


def test_bpe_splits_decode_to_the_text(shakespeare_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bpe"
    cfg = TokenizeConfig(corpus=str(shakespeare_path), tokenizer="bpe", vocab_size=1024, out=out)
    result = tokenize_corpus(cfg)
    assert result.vocab_size == 1024
    assert result.bytes_per_token > 2.5
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == "bpe1024"
    tok = load_tokenizer(out)
    val = tok.decode(open_tokens(out, "val"))
    assert len(val.encode("utf-8")) == meta["splits"]["val"]["bytes"]
    assert shakespeare_path.read_text(encoding="utf-8").endswith(val)


def test_token_dtype_widens_past_65536() -> None:
    assert token_dtype(65_536) == np.dtype("<u2")
    assert token_dtype(65_537) == np.dtype("<u4")
    assert token_dtype(100_277) == np.dtype("<u4")


def test_messy_file_is_normalised_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "messy.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"first line\r\nsecond\rthird \xff\n" * 40)
    result = tokenize_corpus(TokenizeConfig(corpus=str(path), out=tmp_path / "o"))
    assert result.text_changes == {
        "mode": "normalize",
        "bom_stripped": True,
        "crlf_to_lf": 40,
        "cr_to_lf": 40,
        "invalid_bytes_replaced": 40,
    }
    assert "\r" not in load_tokenizer(tmp_path / "o").chars  # type: ignore[union-attr]


def test_exact_mode_keeps_carriage_returns(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"line\r\n" * 50)
    tokenize_corpus(TokenizeConfig(corpus=str(path), out=tmp_path / "o", exact=True))
    assert "\r" in load_tokenizer(tmp_path / "o").chars  # type: ignore[union-attr]


def test_failure_leaves_no_output(shakespeare_path: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("to be or not to be\n" * 50)
    cfg = TokenizeConfig(corpus=str(small), tokenizer="bpe", vocab_size=5000, out=tmp_path / "o")
    with pytest.raises(InputError, match="supports only"):
        tokenize_corpus(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]


def test_even_sample_spreads_over_the_stream() -> None:
    from lmcli.corpus.prepare import _even_sample

    pieces = [f"{i:03d}" * 100 for i in range(100)]  # 300 characters each
    kept = list(_even_sample(iter(pieces), 30_000, budget=6_000))
    assert 19 <= len(kept) <= 21
    indices = [pieces.index(p) for p in kept]
    assert indices[0] < 10 and indices[-1] >= 90  # from the whole stream, not a prefix
    assert list(_even_sample(iter(pieces), 30_000, budget=1e9)) == pieces


def test_threaded_encoding_keeps_order(shakespeare_text: str) -> None:
    from lmcli.corpus.prepare import _encode
    from lmcli.tokenizers.bpe import train_bpe

    tok = train_bpe([shakespeare_text[:100_000]], 300)
    pieces = [shakespeare_text[i : i + 5000] for i in range(0, 200_000, 5000)]
    one = [a.tolist() for a in _encode(tok, iter(pieces), workers=1)]
    three = [a.tolist() for a in _encode(tok, iter(pieces), workers=3)]
    assert one == three
    assert len(one) == len(pieces)


def test_bpe_merges_from_a_sample_still_encode_everything(
    shakespeare_path: Path, tmp_path: Path
) -> None:
    cfg = TokenizeConfig(
        corpus=str(shakespeare_path),
        tokenizer="bpe",
        vocab_size=300,
        out=tmp_path / "o",
        bpe_train_mb=0.2,
        chunk_bytes=50_000,
    )
    result = tokenize_corpus(cfg)
    assert result.bpe_train_mb == pytest.approx(0.2)
    tok = load_tokenizer(tmp_path / "o")
    text = shakespeare_path.read_text(encoding="utf-8")
    assert (
        tok.decode(open_tokens(tmp_path / "o", "train"))
        + tok.decode(open_tokens(tmp_path / "o", "val"))
        == text
    )
