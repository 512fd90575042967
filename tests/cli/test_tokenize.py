from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["tokenize", *args])
    return result.exit_code, result.stdout, result.stderr


def test_table_summary(shakespeare_path: Path, tmp_path: Path) -> None:
    code, out, err = run(str(shakespeare_path), "--out", str(tmp_path / "o"))
    assert code == 0, err
    for label in ("characters", "bytes per token", "train / val tokens", "text changes"):
        assert label in out
    assert "1,115,394" in out


def test_json_summary_is_one_object(shakespeare_path: Path, tmp_path: Path) -> None:
    code, out, _ = run(str(shakespeare_path), "-t", "bpe", "--vocab-size", "300", "--json",
                       "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 0
    summary = json.loads(out)
    assert summary["vocab_size"] == 300
    assert summary["tokens"] == summary["train_tokens"] + summary["val_tokens"]
    assert summary["bytes"] == 1_115_394


def test_default_out_dir_and_force(
    shakespeare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(str(shakespeare_path), "--json")[0] == 0
    out_dir = tmp_path / "tokens" / "tinyshakespeare-char"
    assert (out_dir / "meta.json").is_file()
    code, _, err = run(str(shakespeare_path))
    assert code == 1
    assert "output directory exists" in err and "--force" in err
    assert run(str(shakespeare_path), "--force", "--json")[0] == 0  # replaces lmcli's own
    (out_dir / "notes.txt").write_text("x")  # not lmcli's: --force must not delete it
    code, _, err = run(str(shakespeare_path), "--force")
    assert code == 1 and "(it holds notes.txt)" in err
    assert (out_dir / "notes.txt").read_text() == "x"
    (out_dir / "notes.txt").unlink()
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["tinyshakespeare-char"]


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (tmp / "tiny.txt").write_text("x")
    (tmp / "ok.txt").write_text("some text\n" * 100)
    (tmp / "exists").mkdir()
    (tmp / "pictures").mkdir()
    (tmp / "pictures" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp / "pictures" / "empty.txt").write_bytes(b"")
    return {
        "missing": (["nope/missing.txt"], "no such file or named corpus"),
        "no text in directory": (
            [str(tmp / "pictures")],
            "holds no text file (skipped a.png: looks like a binary file (a NUL byte at offset "
            "8), not text; empty.txt: is empty)",
        ),
        "glob matches nothing": ([str(tmp / "*.md")], "matches no files"),
        "empty": ([str(tmp / "empty.txt")], "is empty"),
        "binary": ([str(tmp / "binary.bin")], "looks like a binary file"),
        "too small": ([str(tmp / "tiny.txt")], "too small to hold out --val-fraction"),
        "vocab low": ([str(tmp / "ok.txt"), "-t", "bpe", "--vocab-size", "256"], "at least 257"),
        "vocab high": (
            [str(tmp / "ok.txt"), "-t", "bpe", "--vocab-size", str(2**32 + 1)],
            "at most 4294967296",
        ),
        "vocab too big for corpus": (
            [str(tmp / "ok.txt"), "-t", "bpe", "--vocab-size", "4096"],
            "supports only",
        ),
        "vocab with char": ([str(tmp / "ok.txt"), "--vocab-size", "300"], "bpe only"),
        "unknown tokenizer": ([str(tmp / "ok.txt"), "-t", "wordpiece"], "unknown tokenizer"),
        "bad fraction": ([str(tmp / "ok.txt"), "--val-fraction", "1.5"], "--val-fraction"),
        "out exists": ([str(tmp / "ok.txt"), "--out", str(tmp / "exists")], "exists"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing", "no text in directory", "glob matches nothing", "empty", "binary", "too small",
        "vocab low", "vocab high", "vocab too big for corpus", "vocab with char",
        "unknown tokenizer", "bad fraction", "out exists",
    ],
)  # fmt: skip
def test_bad_input_is_one_line_error(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args, message = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(*args)
    assert code == 1
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in out + err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


def test_pretrained_offline_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    (tmp_path / "ok.txt").write_text("some text\n" * 100)
    code, _, err = run(str(tmp_path / "ok.txt"), "-t", "gpt2", "--out", str(tmp_path / "o"))
    assert code == 1
    assert "could not load tiktoken encoding 'gpt2'" in err
    assert "hint:" in err
    assert not (tmp_path / "o").exists()


def test_named_corpus_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """A named corpus with no bundled copy is downloaded: offline, the hint says what to pass."""
    from lmcli.corpus import named

    catalog = named.load_catalog()
    recipe = catalog["shakespeare"].__class__(
        **{**catalog["shakespeare"].__dict__, "url": "http://127.0.0.1:9/x", "bundled": None}
    )
    monkeypatch.setattr(named, "load_catalog", lambda: {"shakespeare": recipe})
    code, _, err = run("shakespeare")
    assert code == 1
    assert "could not download shakespeare" in err
    assert "pass a local copy of tinyshakespeare.txt (a file path) as CORPUS" in err


def test_tokenizer_from_encodes_with_a_saved_tokenizer(
    shakespeare_text: str, tmp_path: Path
) -> None:
    from lmcli.corpus.tokenfiles import open_tokens
    from lmcli.tokenizers import load_tokenizer

    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(shakespeare_text[:20_000])
    second.write_text(shakespeare_text[20_000:30_000])
    code, _, err = run(str(first), "-t", "bpe", "--vocab-size", "300", "--out", str(tmp_path / "a"))
    assert code == 0, err
    code, out, err = run(str(second), "--tokenizer-from", str(tmp_path / "a"), "--json",
                         "--out", str(tmp_path / "b"))  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["tokenizer"] == "bpe300"
    tokenizer = load_tokenizer(tmp_path / "a")
    ids = [int(i) for s in ("train", "val") for i in open_tokens(tmp_path / "b", s)]
    assert tokenizer.decode(ids) == second.read_text()
    code, _, err = run(str(second), "--tokenizer-from", str(tmp_path / "a"), "--vocab-size", "400")
    assert code == 1 and "--tokenizer-from uses a saved tokenizer" in err
    code, _, err = run(str(second), "--drop-unknown")
    assert code == 1 and "--drop-unknown applies with --tokenizer-from" in err
