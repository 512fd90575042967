"""`lmcli runs`: a folder with a finished, an interrupted and a running run, listed and plotted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.rundir import read_metrics

TINY = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch-size", "4",
        "--threads", "1"]  # fmt: skip


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def statuses(folder: Path) -> dict[str, str]:
    code, out, err = cli("runs", folder, "--json")
    assert code == 0, err
    return {r["name"]: r["status"] for r in json.loads(out)["runs"]}


def test_finished_interrupted_and_training_runs(shakespeare_text: str, tmp_path: Path) -> None:
    text = tmp_path / "small.txt"
    text.write_text(shakespeare_text[:30_000])
    runs = tmp_path / "runs"
    code, _, err = cli("train", text, *TINY, "--max-steps", "20", "--eval-every", "10",
                       "--out", runs / "done", "--quiet")  # fmt: skip
    assert code == 0, err
    assert read_metrics(runs / "done")[-1] == {
        "step": 20, "kind": "end", "interrupted": False,
        "train_seconds": read_metrics(runs / "done")[-1]["train_seconds"], "tokens": 20 * 64,
    }  # fmt: skip
    cmd = [sys.executable, "-m", "lmcli", "train", str(text), *TINY, "--log-every", "1",
           "--eval-every", "5", "--max-steps", "1000000", "--out", str(runs / "going")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(
            r.get("kind") == "eval" for r in read_metrics(runs / "going")
        ):
            time.sleep(0.2)
        assert statuses(runs) == {"done": "finished", "going": "training"}
        code, out, err = cli("runs", runs, "--json")
        assert code == 0, err
        going = next(r for r in json.loads(out)["runs"] if r["name"] == "going")
        assert going["holder"].startswith(f"{proc.pid} (")  # the process training it
    finally:
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert read_metrics(runs / "going")[-1]["kind"] == "end"
    assert read_metrics(runs / "going")[-1]["interrupted"] is True
    assert statuses(runs) == {"done": "finished", "going": "interrupted"}

    code, out, err = cli("runs", runs, "--plot", "--out", tmp_path / "curves.png")
    assert code == 0, err
    assert "done" in out and "going" in out and "▁" in out  # a sketch of each curve
    picture = (tmp_path / "curves.png").read_bytes()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 20_000
    data = json.loads(cli("runs", runs / "done", "--json")[1])
    (only,) = data["runs"]
    assert only["steps"] == 20 and only["params"] > 0 and only["best_val_bpb"] > 0
    assert only["model"] == "transformer 1×16" and only["tokenizer"] == "char"
    assert [p["step"] for p in only["curve"]] == [10, 20]
    # A resumed run drops the end row of the attempt it continues.
    code, _, err = cli("train", "--resume", runs / "done", "--max-steps", "25", "--quiet")
    assert code == 0, err
    ends = [r for r in read_metrics(runs / "done") if r["kind"] == "end"]
    assert [r["step"] for r in ends] == [25]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere"], "no such folder: nowhere"),
        (["empty"], "no runs in empty"),
        (["--out", "x.png"], "--out is where --plot writes its PNG"),
    ],
)
def test_runs_bad_input(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "runs").mkdir()
    code, out, err = cli("runs", *args)
    assert code == 1 and message in err and out == "", err
