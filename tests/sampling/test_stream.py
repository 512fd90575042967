"""Streaming text: incomplete UTF-8 is held back, and the stream adds up to the final text."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmcli.sampling.stream import Utf8Stream, decode_all
from lmcli.tokenizers.bpe import BpeTokenizer, train_bpe

MULTIBYTE = "Où est l'été ? Ça coûte 5 € — 日本語のテキスト, emoji 😀🎭 and ẞ, ŋ, Ω.\n"


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    # Merges learned on text with multi-byte characters: many tokens end inside one.
    return train_bpe([MULTIBYTE * 20], 300)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def shown(chunks: list[bytes]) -> list[str]:
    stream = Utf8Stream()
    return [stream.feed(chunk) for chunk in chunks] + [stream.flush()]


def test_bpe_tokens_that_split_characters_never_show_a_replacement(bpe: BpeTokenizer) -> None:
    chunks = [bpe.decode_bytes([int(i)]) for i in bpe.encode(MULTIBYTE)]
    # The test is only meaningful if some token ends inside a character.
    assert any(not _valid(b"".join(chunks[: i + 1])) for i in range(len(chunks)))
    pieces = shown(chunks)
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == MULTIBYTE == bpe.decode(bpe.encode(MULTIBYTE))


def _valid(data: bytes) -> bool:
    """Whether `data` is UTF-8; a prefix of valid text is not when it ends inside a character."""
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_invalid_bytes_show_at_once_and_an_unfinished_end_at_the_flush() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"a\xff") == "a\ufffd"  # never valid: shown now
    assert stream.feed(b"\xe2\x82") == ""  # the start of a 3-byte character: held back
    assert stream.feed(b"\xac!") == "€!"
    assert stream.feed(b"\xf0\x9f") == ""
    assert stream.flush() == "\ufffd"  # the sample ended inside a character


@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=8))
def test_a_stream_adds_up_to_decoding_everything_at_once(data: bytes, cuts: list[int]) -> None:
    chunks = split(data, cuts)
    assert "".join(shown(chunks)) == decode_all(chunks) == data.decode("utf-8", "replace")


@given(st.text(max_size=40), st.lists(st.integers(0, 200), max_size=8))
def test_valid_text_streams_without_replacement_characters(text: str, cuts: list[int]) -> None:
    if "\ufffd" in text:  # shown as it is, but the check below could not tell
        return
    data = text.encode("utf-8")
    pieces = shown(split(data, cuts))
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text
