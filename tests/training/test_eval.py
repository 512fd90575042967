"""`lmcli eval RUN [TEXT_OR_TOKEN_DIR]`: a run's weights measured on any text, as training's
evaluations measure them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.rundir import read_metrics
from lmcli.tokenizers import load_tokenizer

TINY = ["--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
        "--threads", "1"]  # fmt: skip


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def evaluated(*args: str | Path) -> dict:
    code, out, err = cli("eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def run(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    (folder / "small.txt").write_text(shakespeare_text[:40_000])
    code, _, err = cli("train", folder / "small.txt", *TINY, "--max-steps", "25",
                       "--eval-every", "10", "--out", folder / "run", "--quiet")  # fmt: skip
    assert code == 0, err
    return folder / "run"


def test_the_runs_own_split_gives_trainings_evaluations(run: Path) -> None:
    evals = [r for r in read_metrics(run) if r["kind"] == "eval"]
    last = evaluated(run / "last.safetensors")
    assert last["loss"] == pytest.approx(evals[-1]["val_loss"], rel=1e-9)
    assert last["bits_per_byte"] == pytest.approx(evals[-1]["val_bpb"], rel=1e-9)
    assert last["step"] == evals[-1]["step"] == 25
    best = evaluated(run)  # a run directory: its best.safetensors, as lmcli sample uses
    assert best["loss"] == pytest.approx(min(r["val_loss"] for r in evals), rel=1e-9)
    assert best["perplexity"] == pytest.approx(math.exp(best["loss"]))
    assert best["tokens"] == best["windows"] * 16 and best["data"].endswith("(val split)")
    train = evaluated(run, "--split", "train")
    assert train["tokens"] > best["tokens"]


def test_by_position_has_one_value_per_position_whose_mean_is_the_whole(run: Path) -> None:
    result = evaluated(run, "--by-position")
    curve = result["bpb_by_position"]
    assert len(curve) == 16
    assert sum(curve) / len(curve) == pytest.approx(result["bits_per_byte"], rel=1e-6)  # float32
    code, out, _ = cli("eval", run, "--by-position")
    assert code == 0 and "by position in the window" in out and "8-15" in out


def test_a_text_is_encoded_with_the_runs_tokenizer_and_measured_whole(
    run: Path, shakespeare_text: str, tmp_path: Path
) -> None:
    text = shakespeare_text[100_000:110_000]
    (tmp_path / "other.txt").write_text(text)
    result = evaluated(run, tmp_path / "other.txt")
    ids = load_tokenizer(run).encode(text)
    assert result["tokens"] == (len(ids) - 1) // 16 * 16
    assert result["bytes_per_token"] == pytest.approx(len(text.encode()) / len(ids))
    assert result["data"] == str(tmp_path / "other.txt")
    # The same text as a token directory made with the run's tokenizer: the same measure.
    tokens = tmp_path / "tokens"
    code, _, err = cli("tokenize", tmp_path / "other.txt", "--tokenizer-from", run,
                       "--val-fraction", "0.5", "--out", tokens)  # fmt: skip
    assert code == 0, err
    val = evaluated(run, tokens)
    assert val["tokens"] < result["tokens"] and val["data"] == f"{tokens} (val split)"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown", "has 2 characters the char vocabulary of"),
        ("short", "too few for one window of the model's context of 16"),
        ("split", "--split applies to a token directory"),
        ("other tokenizer", "was tokenized with another tokenizer"),
        ("no run", "no such run directory or weights file"),
        ("bad split", "--split must be train or val"),
    ],
)
def test_what_cannot_be_measured_is_a_one_line_error(
    case: str, message: str, run: Path, tmp_path: Path
) -> None:
    (tmp_path / "accents.txt").write_text("Où est le café? " * 200)
    (tmp_path / "short.txt").write_text("To be.\n")
    (tmp_path / "upper.txt").write_text("THE KING\n" * 500)
    assert cli("tokenize", tmp_path / "upper.txt", "--out", tmp_path / "upper")[0] == 0
    args = {
        "unknown": [run, tmp_path / "accents.txt"],
        "short": [run, tmp_path / "short.txt"],
        "split": [run, tmp_path / "short.txt", "--split", "train"],
        "other tokenizer": [run, tmp_path / "upper"],
        "no run": [tmp_path / "nowhere"],
        "bad split": [run, "--split", "test"],
    }[case]
    code, out, err = cli("eval", *args)
    assert code == 1 and message in err, err
    assert out == "" and "Traceback" not in err
    if case == "unknown":
        dropped = evaluated(run, tmp_path / "accents.txt", "--drop-unknown")
        assert dropped["tokens"] > 0
