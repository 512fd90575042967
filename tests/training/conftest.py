"""Tiny token data for training tests: the first 60k characters of Tiny Shakespeare."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcli.config import TokenizeConfig
from lmcli.corpus.prepare import tokenize_corpus

TINY = {
    "layers": 2, "width": 32, "heads": 2, "context": 16, "batch-size": 8, "lr": 3e-3,
    "warmup": 5, "eval-every": 10, "log-every": 5, "threads": 1,
}  # fmt: skip


@pytest.fixture(scope="session")
def small_text(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(shakespeare_text[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def token_dir(small_text: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokens") / "small-char"
    tokenize_corpus(TokenizeConfig(corpus=str(small_text), out=out))
    return out
