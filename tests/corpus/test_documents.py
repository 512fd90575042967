"""Many files as one corpus: a directory or a glob, tokenized through the CLI and checked against
the same files concatenated and tokenized by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.corpus.tokenfiles import TokenMeta, open_tokens
from lmcli.tokenizers import CharTokenizer, load_tokenizer


def tokenize(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["tokenize", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def books(shakespeare_text: str, tmp_path: Path) -> Path:
    """Three text files (one in a subfolder, one without a final newline, one with a BOM and
    CRLF endings), a picture, an empty file and a hidden folder."""
    root = tmp_path / "books"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text(shakespeare_text[:30_000])
    (root / "a.txt").write_bytes(b"\xef\xbb\xbf" + shakespeare_text[30_000:50_000].encode())
    (root / "sub" / "c.txt").write_bytes(shakespeare_text[50_000:70_000].rstrip().encode()
                                         .replace(b"\n", b"\r\n"))  # fmt: skip
    (root / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "empty.txt").write_bytes(b"")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def texts(books: Path) -> dict[str, str]:
    """The three documents' texts as lmcli normalises them, in lmcli's (sorted) order."""
    out = {}
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        raw = (books / name).read_bytes().removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        out[name] = raw.decode()
    return out


def tokens(directory: Path) -> np.ndarray:
    return np.concatenate([np.asarray(open_tokens(directory, s)) for s in ("train", "val")])


def test_a_directory_equals_its_files_joined_by_blank_lines(books: Path, tmp_path: Path) -> None:
    code, out, err = tokenize(books, "--out", tmp_path / "t", "--json")
    assert code == 0, err
    joined = "".join(t + ("\n" if t.endswith("\n") else "\n\n") for t in texts(books).values())
    by_hand = CharTokenizer.from_texts([joined])
    tokenizer = load_tokenizer(tmp_path / "t")
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.chars == by_hand.chars
    assert np.array_equal(tokens(tmp_path / "t"), by_hand.encode(joined))
    summary = json.loads(out)
    assert summary["documents"] == 3 and summary["separator"] == "blank-line"
    assert summary["text_changes"]["bom_stripped"] and summary["text_changes"]["crlf_to_lf"] > 0
    # Every file's name, size and sha256 in meta.json, and what was skipped, with why.
    corpus = TokenMeta.load(tmp_path / "t").corpus
    assert [f["name"] for f in corpus["files"]] == ["a.txt", "b.txt", "sub/c.txt"]
    for entry in corpus["files"]:
        data = (books / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert corpus["skipped"] == [
        {"name": ".git/", "why": "hidden folder"},
        {"name": "cover.png", "why": "looks like a binary file (a NUL byte at offset 8), not text"},
        {"name": "empty.txt", "why": "is empty"},
    ]
    assert "skipped 3 files" in err and "cover.png: looks like a binary file" in err
    listing = "".join(f"{f['sha256']}  {f['name']}\n" for f in corpus["files"])  # sha256sum's
    assert corpus["sha256"] == hashlib.sha256(listing.encode()).hexdigest()


def test_bpe_separates_documents_with_a_trained_in_end_of_text(books: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    code, _, err = tokenize(books, "-t", "bpe", "--vocab-size", "400", "--out", out)
    assert code == 0, err
    tokenizer = load_tokenizer(out)
    assert tokenizer.vocab_size == 400 and tokenizer.eot_id == 399  # inside --vocab-size
    eot = np.array([399], dtype=np.uint32)
    by_hand = np.concatenate([part for t in texts(books).values()
                              for part in (tokenizer.encode(t), eot)])  # fmt: skip
    assert np.array_equal(tokens(out), by_hand)
    assert np.count_nonzero(tokens(out) == 399) == 3


def test_val_files_holds_out_whole_files_from_the_end(books: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    code, _, err = tokenize(books, "--val-files", "1", "--doc-separator", "eot", "--out", out)
    assert code == 0, err
    tokenizer = load_tokenizer(out)
    assert tokenizer.eot_id == tokenizer.vocab_size - 1  # asked for: char gets the token too
    docs = texts(books)
    val = np.asarray(open_tokens(out, "val"))
    assert np.array_equal(val[:-1], tokenizer.encode(docs["sub/c.txt"]))
    assert val[-1] == tokenizer.eot_id
    assert tokenizer.decode(val[-3:]).endswith("<|endoftext|>")
    meta = TokenMeta.load(out)
    assert meta.splits["val"].bytes == len(docs["sub/c.txt"].encode())
    assert meta.corpus["val_files"] == 1 and meta.corpus["separator"] == "eot"


def test_the_validation_split_can_start_inside_a_file(books: Path, tmp_path: Path) -> None:
    """--val-fraction cuts the concatenation just after a newline, here inside b.txt."""
    out = tmp_path / "t"
    code, _, err = tokenize(books, "--val-fraction", "0.6", "--doc-separator", "none", "--out", out)
    assert code == 0, err
    joined = "".join(texts(books).values())
    tokenizer = load_tokenizer(out)
    train = tokenizer.decode(np.asarray(open_tokens(out, "train")))
    val = tokenizer.decode(np.asarray(open_tokens(out, "val")))
    assert train + val == joined and train.endswith("\n")
    assert len(texts(books)["a.txt"]) < len(train) < len(joined) - len(texts(books)["sub/c.txt"])


def test_a_glob_reads_only_what_it_matches_in_sorted_order(books: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    code, out_text, err = tokenize(f"{books}/**/*.txt", "--out", out, "--json")
    assert code == 0, err
    corpus = TokenMeta.load(out).corpus
    assert [f["name"] for f in corpus["files"]] == ["a.txt", "b.txt", "sub/c.txt"]
    assert corpus["skipped"] == [{"name": "empty.txt", "why": "is empty"}]  # the .png: no match
    assert json.loads(out_text)["corpus"] == f"{books}/**/*.txt"


def test_folders_lmcli_wrote_inside_the_corpus_are_skipped(books: Path) -> None:
    """Tokens written into the corpus folder (the default ./tokens when run inside it) are not
    read back as text the next time."""
    code, _, err = tokenize(books, "--out", books / "tokens" / "first")
    assert code == 0, err
    code, _, err = tokenize(books, "--out", books / "tokens" / "second", "--json")
    assert code == 0, err
    corpus = TokenMeta.load(books / "tokens" / "second").corpus
    assert [f["name"] for f in corpus["files"]] == ["a.txt", "b.txt", "sub/c.txt"]
    assert {"name": "tokens/first/", "why": "a folder lmcli wrote (tokens or a run)"} in corpus[
        "skipped"
    ]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("val files", "--val-files 3 leaves no file to train on: "),
        ("no text", "holds no text file (skipped cover.png: looks like a binary file"),
        ("no match", "matches no files"),
        ("token dir", "is a folder lmcli wrote (a token or run directory), not text"),
        ("separator", "--doc-separator must be one of auto, eot, blank-line, none"),
    ],
)
def test_bad_many_file_corpora_are_one_line_errors(
    case: str, message: str, books: Path, tmp_path: Path
) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "cover.png").write_bytes((books / "cover.png").read_bytes())
    made = tmp_path / "made"
    assert tokenize(books, "--out", made)[0] == 0
    args = {
        "val files": [books, "--val-files", "3"],
        "no text": [pictures],
        "no match": [f"{books}/*.md"],
        "token dir": [made],
        "separator": [books, "--doc-separator", "comma"],
    }[case]
    code, _, err = tokenize(*args, "--out", tmp_path / "o")
    assert code == 1 and message in err, err
    assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err  # error: + hint:
    assert not (tmp_path / "o").exists()


def test_train_and_compare_rnn_take_a_folder(books: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    tiny = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "16",
            "--batch-size", "4", "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(
        app, ["train", f"{books}/**/*.txt", *tiny, "--max-steps", "3", "--val-files", "1",
              "--tokenizer", "bpe", "--vocab-size", "300", "--out", str(run), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    meta = TokenMeta.load(run / "data")
    assert meta.corpus["separator"] == "eot" and meta.corpus["val_files"] == 1
    assert len(meta.corpus["files"]) == 3
    compared = tmp_path / "c"
    args = ["compare-rnn", str(books), "--steps", "2", "--eval-points", "2", "--sample-tokens",
            "5", "--threads", "1", "--out", str(compared), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert len(TokenMeta.load(compared / "data").corpus["files"]) == 3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.stderr  # the same folder: its sha256 still matches
    (books / "b.txt").write_text("changed\n" * 100)
    changed = CliRunner().invoke(app, args)
    assert changed.exit_code == 1 and "changed since the comparison" in changed.stderr
