from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from lmcli import __version__
from lmcli.cli import app


def test_help_lists_every_command_with_a_description() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("tokenize", "train", "sample", "eval", "runs", "compare-rnn", "bench"):
        assert name in result.stdout
    assert "Turn text files or a named corpus into token files" in result.stdout
    assert "Measure a run on any text" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"lmcli {__version__}"


def test_console_script_and_python_dash_m(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lmcli"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lmcli {__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "lmcli", "tokenize", str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: no such file")
    assert "Traceback" not in out.stderr


def test_bracketed_defaults_in_help_texts_are_shown() -> None:
    """Rich reads "[default: …]" as markup and drops it unless the bracket is escaped."""
    for command, text in (("train", "[default: quick]"), ("tokenize", "[default: 4096 for bpe]")):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0
        assert text in result.stdout, command


def test_brackets_in_an_error_are_shown_as_they_are(tmp_path: Path) -> None:
    """An error's text is not rich markup: "[1]" in a path (or "lmcli[export]") stays."""
    result = CliRunner().invoke(app, ["tokenize", str(tmp_path / "notes[1].txt")])
    assert result.exit_code == 1
    assert f"{tmp_path}/notes[1].txt matches no files" in result.stderr
