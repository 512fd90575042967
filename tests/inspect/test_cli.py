"""`lmcli inspect` end to end: every view in the terminal and as JSON, the tour's page and
pictures, and every bad input as one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.config import INSPECT_VIEWS

PROMPT = "ROMEO:\nBut soft, what light"


def inspect(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["inspect", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("view", INSPECT_VIEWS)
def test_every_view_draws_in_the_terminal_and_prints_its_numbers(
    view: str, trained_run: Path
) -> None:
    code, out, err = inspect(view, str(trained_run), PROMPT, env={"NO_COLOR": "1"})
    assert code == 0, err
    assert "\x1b[" not in out  # NO_COLOR: shades and digits, no escape codes
    assert out.count("─") > 10 and len(out.splitlines()) > 5
    code, out, err = inspect(view, str(trained_run), PROMPT, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert [v["view"] for v in record["views"]] == [view]


def test_the_tour_and_its_page_hold_every_view(trained_run: Path, tmp_path: Path) -> None:
    code, out, err = inspect(str(trained_run), PROMPT, "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert [v["view"] for v in record["views"]] == ["tokens", "next", "attention", "lens"]
    page = (tmp_path / "out" / "inspect.html").read_text(encoding="utf-8")
    assert "http" not in page
    assert all(f'data-view="{view}"' in page for view in INSPECT_VIEWS)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == sorted(INSPECT_VIEWS)
    assert "wrote" in err


def test_no_text_means_the_validation_split(trained_run: Path) -> None:
    code, out, err = inspect("surprise", str(trained_run), "--json")
    assert code == 0, err
    record = json.loads(out)["views"][0]
    assert len(record["tokens"]) == 16 and "validation split" in " ".join(record["notes"])


def test_a_prompt_file_and_an_lstm_compared(trained_run: Path, tmp_path: Path) -> None:
    from tests.inspect.conftest import TRAIN_FLAGS

    text = tmp_path / "p.txt"
    text.write_text(PROMPT, encoding="utf-8")
    lstm = tmp_path / "lstm"
    # The trained run's own token data (its copy in the run): the same vocabulary.
    train = ["train", str(trained_run / "data"), *TRAIN_FLAGS, "--model", "lstm"]
    result = CliRunner().invoke(app, [*train, "--out", str(lstm)])
    assert result.exit_code == 0, result.stderr
    code, out, err = inspect("surprise", str(trained_run), "--file", str(text), "--compare",
                             str(lstm), "--json")  # fmt: skip
    assert code == 0, err
    view = json.loads(out)["views"][0]
    assert len(view["compare"]["bits"]) == len(view["bits"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attention", "no-such-run"], "no-such-run"),
        (["nonsense-view", "run", "prompt", "extra"], "too many arguments"),
        (["attention"], "name a run"),
        (["next", "RUN", "x", "--temperature", "hot"], "--temperature takes numbers"),
        (["next", "RUN", "x", "--temperature", "-1"], "--temperature values must be at least 0"),
        (["attention", "RUN", "ROMEO", "--layer", "7"], "--layer 7 does not exist"),
        (["attention", "RUN", "ROMEO", "--head", "5"], "--head 5 does not exist"),
        (["next", "RUN", "Ωmega"], "characters not in the char vocabulary"),
        (["next", "RUN", "x", "--file", "nowhere.txt"], "give a PROMPT or --file, not both"),
        (["next", "RUN", "--file", "nowhere.txt"], "no such file: nowhere.txt"),
        (["next", "RUN", "--file", "FIFO"], "is not a regular file (a FIFO)"),
        (["next", "RUN", "--file", "."], "is a directory, not a text file"),
        (["next", "RUN", ""], "the text is empty"),
        (["tokens", "RUN", "x", "--top", "0"], "--top must be at least 1"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], message: str, trained_run: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [str(trained_run) if a == "RUN" else str(fifo) if a == "FIFO" else a for a in args]
    code, out, err = inspect(*args)
    assert code == 1, (out, err)
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err and out == ""


def test_an_lstm_is_refused_the_views_it_lacks_naming_another(lstm_run: Path) -> None:
    code, _, err = inspect("attention", str(lstm_run), "ROMEO")
    assert code == 1 and "an LSTM has no attention" in err and "lmcli inspect memory" in err


def test_vs_offline_is_one_line(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed local port: never online
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    code, out, err = inspect("tokens", str(trained_run), PROMPT, "--vs", "gpt2")
    assert code == 1 and "could not load tiktoken encoding 'gpt2'" in err and out == ""


def test_vs_splits_the_text_both_ways(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, shakespeare_text: str
) -> None:
    import tiktoken

    from lmcli.tokenizers.bpe import train_bpe

    fake = train_bpe([shakespeare_text[:50_000]], 300).encoding  # stands in for the download
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: fake)
    code, out, err = inspect("tokens", str(trained_run), PROMPT, "--vs", "gpt2", "--json")
    assert code == 0, err
    view = json.loads(out)["views"][0]
    assert "".join(s["text"] for s in view["vs"]["spans"]) == PROMPT
    assert view["vs"]["tokens"] < view["tokens"]  # merges: fewer tokens than characters


@pytest.mark.browser
def test_a_real_runs_page_in_chromium_carries_the_numbers_of_its_json(
    trained_run: Path, tmp_path: Path
) -> None:
    import subprocess

    from tests.inspect.test_page import Page, chromium_or_skip, heatmap_cells

    chromium = chromium_or_skip()
    out = tmp_path / "out"
    code, stdout, err = inspect("attention", str(trained_run), PROMPT, "--layer", "1", "--out",
                                str(out), "--json")  # fmt: skip
    assert code == 0, err
    heads = json.loads(stdout)["views"][0]["heads"]
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]  # fmt: skip
    page = (out / "inspect.html").as_uri()
    dom = subprocess.run([*browser, page], capture_output=True, text=True, timeout=60,
                         check=True).stdout  # fmt: skip
    parsed = Page(dom)
    assert parsed.find("body")[0].attrs.get("data-rendered") == "1"
    assert [s.attrs["data-view"] for s in parsed.find("section")] == ["attention"]
    for figure, head in enumerate(heads):  # one figure per head, in the JSON's order
        cells = heatmap_cells(parsed, figure)
        assert len(cells) == sum(len(row) for row in head["weights"]) > 0
        for (i, j), cell in cells.items():
            value = head["weights"][i][j]
            assert cell.attrs["data-v"] == ("masked" if value is None else format(value, ".6g"))
