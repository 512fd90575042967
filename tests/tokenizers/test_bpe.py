from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcli.errors import InputError
from lmcli.tokenizers import load_tokenizer, save_tokenizer
from lmcli.tokenizers.bpe import BpeTokenizer, read_ranks, train_bpe, write_ranks


@pytest.fixture(scope="module")
def bpe(shakespeare_text: str) -> BpeTokenizer:
    return train_bpe([shakespeare_text[:300_000]], 512)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_on_any_unicode(bpe: BpeTokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


@given(
    st.text(
        alphabet=st.characters(
            min_codepoint=0x4E00, max_codepoint=0x1F9FF, exclude_categories=("Cs",)
        )
    )
)
def test_round_trip_on_characters_never_seen_in_training(bpe: BpeTokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


def test_lone_surrogates_are_an_input_error(bpe: BpeTokenizer) -> None:
    # What Python makes of invalid UTF-8 in argv: not text, so not encodable.
    with pytest.raises(InputError, match="not valid Unicode"):
        bpe.encode("abc\udcff")


def test_exact_vocab_size(shakespeare_text: str) -> None:
    for size in (257, 300, 1024):
        tok = train_bpe([shakespeare_text[:100_000]], size)
        assert tok.vocab_size == size
        assert len(tok.mergeable_ranks()) == size


def test_training_is_deterministic(shakespeare_text: str) -> None:
    pieces = [shakespeare_text[i : i + 50_000] for i in range(0, 300_000, 50_000)]
    first = train_bpe(pieces, 1024).mergeable_ranks()
    second = train_bpe(list(pieces), 1024).mergeable_ranks()
    assert first == second


def test_too_few_merges_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="supports only 2 merges"):
        train_bpe(["ab ab ab"], 1000)


def test_merges_compress(bpe: BpeTokenizer, shakespeare_text: str) -> None:
    sample = shakespeare_text[-20_000:]
    assert len(bpe.encode(sample)) < 0.6 * len(sample.encode("utf-8"))


def test_saved_tokenizer_reloads_with_tiktoken_alone(bpe: BpeTokenizer, tmp_path: Path) -> None:
    files = save_tokenizer(bpe, tmp_path)
    assert files == ["tokenizer.json", "tokenizer.tiktoken"]
    meta = json.loads((tmp_path / "tokenizer.json").read_text())
    lines = (tmp_path / meta["ranks_file"]).read_text().splitlines()
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in lines)}
    enc = tiktoken.Encoding(
        "reloaded", pat_str=meta["pattern"], mergeable_ranks=ranks, special_tokens={}
    )
    text = "To be, or not to be: that is the question. ☃"
    assert enc.encode_ordinary(text) == [int(t) for t in bpe.encode(text)]
    again = load_tokenizer(tmp_path)
    assert again.vocab_size == bpe.vocab_size
    assert [int(t) for t in again.encode(text)] == [int(t) for t in bpe.encode(text)]


def test_rewritten_ranks_file_is_not_served_stale(bpe: BpeTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "r.tiktoken"
    single = {bytes([b]): b for b in range(256)}
    write_ranks(path, {**single, b"ab": 256})
    assert read_ranks(path) == {**single, b"ab": 256}
    write_ranks(path, {**single, b"xy": 256})
    assert read_ranks(path) == {**single, b"xy": 256}


def test_corrupt_ranks_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "r.tiktoken"
    path.write_text("not a rank line\n")
    with pytest.raises(InputError, match="not a tiktoken rank line"):
        read_ranks(path)
