"""Shared by the reliability tests: the hostile probe's set-up (../shared/reliability/), small.

SMALL is a slice of Tiny Shakespeare, TOK its char token directory, RUN a finished tiny run;
tests that change a run work on a copy (`run_copy`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app

SM = ["--layers", "1", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "4",
      "--max-steps", "6", "--eval-every", "3", "--threads", "1", "--quiet"]  # fmt: skip


@dataclass
class Ran:
    code: int
    out: str
    err: str


def cli(*args: object, env: dict[str, str] | None = None) -> Ran:
    """Run lmcli in this process; an exception that is not a clean exit fails the test."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"lmcli {args} raised {result.exception!r}") from result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def proc(*args: object, cwd: Path | None = None, timeout: float = 120, **kw: object) -> Ran:
    """Run `python -m lmcli` as its own process (signals, stdout, crashes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    done = subprocess.run([sys.executable, "-m", "lmcli", *map(str, args)], cwd=cwd, env=env,
                          text=True, timeout=timeout, **kw)  # type: ignore[call-overload]  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return Ran(done.returncode, done.stdout or "", done.stderr or "")


def refused(ran: Ran, message: str) -> None:
    """Exit 1 with exactly one `error:` line holding `message`, and no traceback."""
    assert ran.code == 1, (ran.code, ran.err)
    errors = [line for line in ran.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, ran.err
    assert message in ran.err, ran.err
    assert "Traceback" not in ran.err + ran.out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) with a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def small(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "small.txt"
    path.write_text(shakespeare_text[:50_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tok(small: Path) -> Path:
    out = small.parent / "t" / "small"
    assert cli("tokenize", small, "--out", out).code == 0
    return out


@pytest.fixture(scope="session")
def run(tok: Path) -> Path:
    out = tok.parent.parent / "runs" / "X"
    ran = cli("train", tok, *SM, "--out", out)
    assert ran.code == 0, ran.err
    return out


@pytest.fixture
def run_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy
