from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmcli.errors import InputError
from lmcli.tokenizers import CharTokenizer

VOCAB = "\n !,.?abcdeéz€😀"
TOK = CharTokenizer(VOCAB)


@given(st.text(alphabet=st.sampled_from(VOCAB)))
def test_round_trip_over_the_vocabulary(s: str) -> None:
    ids = TOK.encode(s)
    assert len(ids) == len(s)
    assert TOK.decode(ids) == s
    assert TOK.decode_bytes(ids) == s.encode("utf-8")


def test_vocabulary_is_sorted_code_points() -> None:
    tok = CharTokenizer("cabbage")
    assert tok.chars == "abceg"
    assert tok.vocab_size == 5
    assert list(tok.encode("cab")) == [2, 0, 1]


def test_unknown_character_is_named() -> None:
    with pytest.raises(InputError, match=r"not in the char vocabulary: 'x', 'y'"):
        TOK.encode("abxzy")


def test_shakespeare_has_65_characters(shakespeare_text: str) -> None:
    tok = CharTokenizer.from_texts([shakespeare_text])
    assert tok.vocab_size == 65
    assert len(tok.encode(shakespeare_text)) == 1_115_394
