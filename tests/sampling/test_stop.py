"""Stop strings, <|endoftext|> and the repetition penalty: the pieces, then `lmcli sample`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.errors import ConfigError
from lmcli.sampling.choose import penalize_repeats
from lmcli.sampling.stop import Samples, StopFilter, parse_stop
from lmcli.tokenizers import CharTokenizer

TINY = ["--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
        "--threads", "1", "--quiet"]  # fmt: skip


def shown(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    f = StopFilter(stops)
    out = "".join(f.feed(c) for c in chunks)
    return out + f.flush(), f.stopped


def test_a_stop_string_split_over_pieces_ends_the_text_before_it() -> None:
    assert shown(["END"], ["ab", "cEN", "Dxyz"]) == ("abc", True)
    assert shown(["END"], ["abcEN", "d"]) == ("abcENd", False)  # "EN" held back, then released
    assert shown(["\n\n", "THE"], ["one\n", "\ntwo"]) == ("one", True)
    assert shown(["aab"], ["aa", "aab"]) == ("aa", True)  # the stop begins inside what was held


def cut_at_first_stop(chunks: list[str], stops: list[str]) -> tuple[str, bool]:
    """By hand: after each chunk (a token's text), does the text so far hold a stop? Then it
    ends where the earliest stop it holds begins."""
    text = ""
    for chunk in chunks:
        text += chunk
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            return text[: min(found)], True
    return text, False


def test_streamed_text_is_the_text_cut_at_its_first_stop_however_it_is_split() -> None:
    rng = random.Random(0)
    for _ in range(500):
        text = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice("ab\n") for _ in range(rng.randint(1, 4))) for _ in range(2)]
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 8))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        expected, found = cut_at_first_stop(chunks, stops)
        f = StopFilter(stops)
        seen = ""
        for chunk in chunks:
            seen += f.feed(chunk)
            assert expected.startswith(seen)  # never shows what a stop would take back
        assert seen + f.flush() == expected and f.stopped == bool(found)


def test_escapes_and_an_empty_stop() -> None:
    assert parse_stop("\\n\\n") == "\n\n" and parse_stop("a\\tb\\\\n") == "a\tb\\n"
    with pytest.raises(ConfigError, match="non-empty"):
        parse_stop("")


def test_samples_end_at_end_of_text_each_on_its_own() -> None:
    tok = CharTokenizer("abc", ["<|endoftext|>"])  # ids: a 0, b 1, c 2, eot 3
    samples = Samples(tok, 2, stops=["cc"], eot=3, stream=True)
    streamed = [samples.feed(np.array(step)) for step in ([0, 1], [3, 2], [1, 2], [0, 0])]
    assert samples.done and samples.tokens == [2, 3]  # sample 1 stopped at "cc" (its 3rd token)
    assert samples.finish() == ["a", "b"]
    assert "".join(streamed) == "a"


def test_the_repetition_penalty_lowers_only_seen_tokens() -> None:
    logits = np.array([[2.0, -1.0, 0.5, 3.0]])
    seen = np.array([[True, True, False, False]])
    assert penalize_repeats(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert penalize_repeats(logits, seen, 1.0) is logits


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def run(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop")
    (root / "small.txt").write_text(shakespeare_text[:20_000])
    code, _, err = cli("train", root / "small.txt", *TINY, "--max-steps", "30", "--out",
                       root / "run")  # fmt: skip
    assert code == 0, err
    return root / "run"


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_a_stop_over_two_tokens_ends_the_sample_unprinted(run: Path, mode: str) -> None:
    greedy = ["--temperature", "0", "--max-new-tokens", "60", "--prompt", "A"]
    code, full, err = cli("sample", run, *greedy, "--no-stream")
    assert code == 0, err
    text = full.removeprefix("A")
    stop = text[20:22]  # two characters: two tokens of a char model
    assert len(stop) == 2
    cut = text.index(stop)
    code, out, err = cli("sample", run, *greedy, mode, "--stop", stop)
    assert code == 0, err
    assert out.rstrip("\n") == ("A" + text[:cut]).rstrip("\n")
    assert stop not in out.removeprefix("A")
    code, out, _ = cli("sample", run, *greedy, "--stop", stop, "--json")
    result = json.loads(out)
    assert result["samples"] == [text[:cut]] and result["stopped"] == [True]
    assert result["tokens"] == cut + 2  # it stopped computing: the stop's tokens were the last


def test_stop_at_end_of_text_on_a_model_of_documents(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"{i:02d}.txt").write_text("hi there\n")
    code, _, err = cli("train", docs, *TINY, "--doc-separator", "eot", "--max-steps", "150",
                       "--lr", "0.01", "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, err
    code, out, err = cli("sample", tmp_path / "run", "--prompt", "hi", "--temperature", "0",
                         "--max-new-tokens", "40", "--stop-at-eot", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["samples"] == [" there\n"] and result["stopped"] == [True]
    code, out, _ = cli("sample", tmp_path / "run", "--prompt", "hi", "--temperature", "0",
                       "--max-new-tokens", "12", "--json")  # fmt: skip
    assert json.loads(out)["samples"][0].startswith(" there\n<|endoftext|>")


def test_the_repetition_penalty_changes_greedy_text_and_one_is_off(run: Path) -> None:
    greedy = ["--temperature", "0", "--max-new-tokens", "40", "--json"]
    plain = json.loads(cli("sample", run, *greedy)[1])["samples"][0]
    assert json.loads(cli("sample", run, *greedy, "--repetition-penalty", "1")[1])["samples"] == [
        plain
    ]
    penalized = json.loads(cli("sample", run, *greedy, "--repetition-penalty", "3")[1])
    assert penalized["samples"][0] != plain
    assert len(set(penalized["samples"][0])) > len(set(plain))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stop", ""], "--stop needs a non-empty string"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be a positive number"),
        (["--repetition-penalty", "nan"], "--repetition-penalty must be a positive number"),
        (["--stop-at-eot"], "has no <|endoftext|> token"),
    ],
)
def test_bad_stops_are_one_line_errors(run: Path, args: list[str], message: str) -> None:
    code, out, err = cli("sample", run, *args)
    assert code == 1 and message in err and out == "", err
