from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcli.corpus.text import TextStats, check_text_file, find_split, iter_text
from lmcli.errors import InputError
from lmcli.tokenizers.bpe import train_bpe


def read_all(path: Path, **kw) -> tuple[str, TextStats]:
    stats = TextStats()
    size = path.stat().st_size
    text = "".join(iter_text(path, 0, size, stats=stats, **kw))
    return text, stats


def test_normalises_bom_crlf_cr_and_invalid_bytes(tmp_path: Path) -> None:
    path = tmp_path / "messy.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\xff\xfe four\n")
    text, stats = read_all(path)
    assert text == "one\ntwo\nthree\ufffd\ufffd four\n"
    assert (stats.bom_stripped, stats.crlf, stats.cr, stats.invalid_bytes) == (True, 1, 1, 2)
    assert stats.chars == len(text)
    assert stats.bytes == len(text.encode("utf-8"))


def test_exact_mode_keeps_bytes(tmp_path: Path) -> None:
    raw = "\ufeffone\r\ntwo\rthree é\n".encode()
    path = tmp_path / "exact.txt"
    path.write_bytes(raw)
    text, stats = read_all(path, exact=True)
    assert text.encode("utf-8") == raw
    assert (stats.bom_stripped, stats.crlf, stats.cr) == (False, 0, 0)


def test_exact_mode_refuses_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text\n" * 10 + b"\xff")
    with pytest.raises(InputError, match="invalid UTF-8 near byte"):
        read_all(path, exact=True)


def test_crlf_split_across_chunks_is_one_newline(tmp_path: Path) -> None:
    # Put the \r as the last byte of the first 1024-byte chunk and the \n first in the next.
    raw = b"a" * 1023 + b"\r\n" + b"b" * 10
    path = tmp_path / "split.txt"
    path.write_bytes(raw)
    text, stats = read_all(path, chunk_bytes=1024)
    assert text == "a" * 1023 + "\n" + "b" * 10
    assert (stats.crlf, stats.cr) == (1, 0)


def test_multibyte_characters_split_across_chunks(tmp_path: Path) -> None:
    original = ("é€😀 line\n" * 500) + "end"
    path = tmp_path / "utf8.txt"
    path.write_text(original, encoding="utf-8")
    text, stats = read_all(path, chunk_bytes=1024)
    assert text == original
    assert stats.invalid_bytes == 0


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n\r\t\u00e9"), max_size=5000))
def test_pieces_join_to_the_whole_text(tmp_path_factory: pytest.TempPathFactory, s: str) -> None:
    path = tmp_path_factory.mktemp("h") / "t.txt"
    path.write_bytes(s.encode("utf-8"))
    if not s:
        return
    text, _ = read_all(path, chunk_bytes=1024)
    assert text == s.replace("\r\n", "\n").replace("\r", "\n")


def test_chunked_bpe_encoding_equals_whole_encoding(shakespeare_text: str, tmp_path: Path) -> None:
    text = shakespeare_text[:200_000]
    path = tmp_path / "s.txt"
    path.write_text(text, encoding="utf-8")
    tok = train_bpe([text], 512)
    pieces = list(iter_text(path, 0, path.stat().st_size, chunk_bytes=4096))
    assert len(pieces) > 10
    chunked = [int(t) for piece in pieces for t in tok.encode(piece)]
    assert chunked == [int(t) for t in tok.encode(text)]


def test_find_split_cuts_after_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))
    size = path.stat().st_size
    split = find_split(path, size, 0.1)
    raw = path.read_bytes()
    assert raw[split - 1 : split] == b"\n"
    assert 0.85 * size < split <= 0.92 * size


def test_find_split_without_newline_lands_on_a_character(tmp_path: Path) -> None:
    path = tmp_path / "one-line.txt"
    path.write_text("é" * 100, encoding="utf-8")
    split = find_split(path, 200, 0.105)  # target byte 179 is inside a 2-byte character
    assert split == 180


def test_find_split_falls_back_to_the_newline_before(tmp_path: Path) -> None:
    path = tmp_path / "two-lines.txt"
    path.write_bytes(b"a" * 50 + b"\n" + b"b" * 49 + b"\n")
    assert find_split(path, 101, 0.1) == 51


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10, "binary")],
)
def test_check_text_file_refuses(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        check_text_file(path)


def test_check_text_file_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        check_text_file(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="is a directory"):
        check_text_file(tmp_path)
