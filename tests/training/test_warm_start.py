"""`lmcli train CORPUS --init-from RUN`: a new run that begins from RUN's weights, architecture
and tokenizer, with a fresh optimizer and schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.checkpoints import load_checkpoint
from lmcli.cli import app
from lmcli.corpus.tokenfiles import TokenMeta
from lmcli.rundir import read_metrics
from lmcli.weights import content_hash, read_weights

TINY = ["--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
        "--threads", "1"]  # fmt: skip


def train(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["train", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def source(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char run trained for 30 steps on 40 KB of Tiny Shakespeare."""
    folder = tmp_path_factory.mktemp("src")
    (folder / "small.txt").write_text(shakespeare_text[:40_000])
    code, _, err = train(folder / "small.txt", *TINY, "--max-steps", "30", "--eval-every", "10",
                         "--out", folder / "run", "--quiet")  # fmt: skip
    assert code == 0, err
    return folder / "run"


def test_the_first_evaluation_is_the_source_runs(source: Path, tmp_path: Path) -> None:
    """On the source's own data, the warm start's step-0 evaluation is the source's best."""
    out = tmp_path / "warm"
    code, stdout, err = train(source / "data", "--init-from", source, "--max-steps", "5",
                              "--eval-every", "5", "--threads", "1", "--out", out,
                              "--json")  # fmt: skip
    assert code == 0, err
    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    best = min(r["val_loss"] for r in read_metrics(source) if r["kind"] == "eval")
    assert evals[0]["step"] == 0 and evals[0]["val_loss"] == pytest.approx(best, rel=1e-6)
    # A fresh optimizer and schedule: the run counts its own steps from 0, and says where it began.
    assert load_checkpoint(out / "last.pt")["step"] == 5
    assert [r["step"] for r in evals] == [0, 5]
    config = json.loads((out / "config.json").read_text())
    weights = read_weights(source / "best.safetensors")
    assert config["init_from"] == {
        "run": str(source.absolute()),
        "weights": "best.safetensors",
        "step": weights.step,
        "sha256": content_hash(weights.arrays),
    }
    # The architecture is the source's, whatever the default preset says.
    assert config["config"]["layers"] == 2 and config["config"]["width"] == 32
    assert json.loads(stdout)["steps"] == 5


def test_new_text_is_encoded_with_the_runs_tokenizer(source: Path, tmp_path: Path) -> None:
    text = tmp_path / "new.txt"
    text.write_text("Héllo there, my lord. Où est-il?\n" * 400)
    code, _, err = train(text, "--init-from", source, "--max-steps", "2", "--out", tmp_path / "a")
    assert code == 1
    assert "new.txt has 2 characters the char vocabulary of" in err and "'é' 'ù'" in err
    assert "hint: pass --drop-unknown" in err and not (tmp_path / "a").exists()
    code, _, err = train(text, "--init-from", source, "--drop-unknown", "--max-steps", "2",
                         "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, err
    meta = TokenMeta.load(tmp_path / "a" / "data")
    assert meta.text["unknown_dropped"] == {"chars": "éù", "count": 800}
    assert meta.vocab_size == TokenMeta.load(source / "data").vocab_size
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (
        source / "tokenizer.json"
    ).read_text()
    assert meta.splits["train"].chars + meta.splits["val"].chars == len(text.read_text()) - 800


def test_a_warm_start_resumes(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "warm"
    code, _, err = train(source / "data", "--init-from", source, "--max-steps", "3",
                         "--out", out, "--quiet", "--threads", "1")  # fmt: skip
    assert code == 0, err
    code, _, err = train("--resume", out, "--max-steps", "6", "--quiet")
    assert code == 0, err
    assert load_checkpoint(out / "last.pt")["step"] == 6
    (out / "last.pt").unlink()  # as if killed before its first save: it begins again from RUN
    (out / "metrics.jsonl").unlink()
    code, _, err = train("--resume", out, "--max-steps", "2", "--quiet")
    assert code == 0, err
    assert read_metrics(out)[0]["step"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init-from", "nowhere"], "--init-from nowhere: no such run directory"),
        (
            ["--layers", "4"],
            "takes that run's architecture (a transformer); --layers 4 (RUN's is 2)",
        ),
        (["--model", "lstm"], "--model 'lstm' (RUN's is 'transformer') would change it"),
        (["--tokenizer", "bpe"], "encodes the corpus with that run's tokenizer"),
        (["--drop-unknown", "--resume", "."], "--drop-unknown would be ignored"),
    ],
)
def test_bad_warm_starts_are_one_line_errors(
    args: list[str], message: str, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if "--init-from" not in args and "--resume" not in args:
        args = ["--init-from", str(source), *args]
    corpus = [] if "--resume" in args else [str(source / "data")]
    code, _, err = train(*corpus, *args, "--max-steps", "1", "--out", tmp_path / "o")
    assert code in (1, 2) and message in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_an_lstm_run_warm_starts_and_a_token_dir_must_share_its_tokenizer(
    source: Path, tmp_path: Path, shakespeare_text: str
) -> None:
    lstm = tmp_path / "lstm"
    code, _, err = train(source / "data", "--model", "lstm", "--layers", "1", "--width", "16",
                         "--context", "16", "--max-steps", "3", "--out", lstm,
                         "--quiet")  # fmt: skip
    assert code == 0, err
    code, _, err = train(source / "data", "--init-from", lstm, "--max-steps", "2",
                         "--out", tmp_path / "w", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "w" / "config.json").read_text())["config"]["model"] == "lstm"
    code, _, err = train(source / "data", "--init-from", lstm, "--model", "transformer",
                         "--out", tmp_path / "x")  # fmt: skip
    assert code == 1 and "takes that run's architecture (an LSTM)" in err
    other = tmp_path / "other.txt"
    other.write_text(shakespeare_text[:20_000].upper())
    tokens = tmp_path / "tokens"
    assert CliRunner().invoke(app, ["tokenize", str(other), "--out", str(tokens)]).exit_code == 0
    code, _, err = train(tokens, "--init-from", source, "--out", tmp_path / "y")
    assert code == 1 and "was tokenized with another tokenizer" in err
