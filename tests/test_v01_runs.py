"""Run directories made by lmcli 0.1 (tests/fixtures/v01-run, written by make_v01_run.sh with
lmcli 0.1 itself) still sample and resume: their torch.save weights are read once and saved as
safetensors, their last.pt continues as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.checkpoints import load_checkpoint
from lmcli.cli import app

FIXTURE = Path(__file__).with_name("fixtures") / "v01-run"


@pytest.fixture
def v01_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def lmcli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_fixture_is_lmcli_0_1s() -> None:
    config = json.loads((FIXTURE / "config.json").read_text())
    assert config["schema_version"] == 1 and config["lmcli_version"] == "0.1.0"
    assert {p.name for p in FIXTURE.iterdir()} >= {"best.pt", "last.pt", "config.json", "data"}
    assert not list(FIXTURE.glob("*.safetensors"))


def test_a_0_1_run_samples_after_one_conversion(v01_run: Path) -> None:
    code, out, err = lmcli("sample", v01_run, "--max-new-tokens", "20", "--seed", "3")
    assert code == 0, err
    assert f"note: {v01_run}/best.pt is an lmcli 0.1 checkpoint" in err
    assert "torch.load(weights_only=True)" in err and (v01_run / "best.safetensors").is_file()
    again = lmcli("sample", v01_run, "--max-new-tokens", "20", "--seed", "3")
    assert again[0] == 0 and again[1] == out and "note:" not in again[2]  # read once
    torch_engine = lmcli("sample", v01_run, "--max-new-tokens", "20", "--seed", "3",
                         "--device", "auto")  # fmt: skip
    assert torch_engine[1] == out


def test_a_0_1_run_resumes_where_it_stopped(v01_run: Path) -> None:
    assert load_checkpoint(v01_run / "last.pt")["step"] == 6
    code, out, err = lmcli("train", "--resume", v01_run, "--max-steps", "9", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 9
    assert load_checkpoint(v01_run / "last.pt")["step"] == 9
    assert (v01_run / "best.safetensors").is_file() and (v01_run / "last.safetensors").is_file()
    assert lmcli("sample", v01_run, "--max-new-tokens", "5")[0] == 0
