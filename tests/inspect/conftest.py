"""Runs to inspect: random weights (every property a view must show holds for any weights) in
several architectures, and one tiny trained run with its validation split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.config import InspectConfig, ModelConfig
from lmcli.inspect.source import Subject, open_subject
from lmcli.models import build_model
from lmcli.tokenizers import CharTokenizer, save_tokenizer
from lmcli.weights import save_weights

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPRSTUWYabcdefghiklmnoprstuwy"
TINY = ModelConfig(vocab_size=len(CHARS), layers=2, width=32, heads=4, context=16)
ARCHITECTURES = {
    "rope": TINY,
    "learned gqa": replace(TINY, pos="learned", norm="layernorm", kv_heads=2),
    "sinusoidal mqa post-norm": replace(TINY, pos="sinusoidal", kv_heads=1, norm_placement="post"),
    "none windows": replace(TINY, pos="none", window=4, window_pattern="SL"),
    "lstm": replace(TINY, model="lstm", heads=1),
}
TRAIN_FLAGS = [
    "--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
    "--eval-every", "3", "--max-steps", "6", "--threads", "1", "--quiet",
]  # fmt: skip


def fake_run(cfg: ModelConfig, folder: Path, seed: int = 0) -> Path:
    """A run folder of random weights, larger than initialisation's so that attention is far
    from uniform."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    folder.mkdir(parents=True)
    save_weights(folder / "best.safetensors", model.state_dict(), cfg, step=1)
    save_tokenizer(CharTokenizer(CHARS), folder)
    return folder


@pytest.fixture(scope="session", params=list(ARCHITECTURES))
def any_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(ARCHITECTURES[request.param], tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="session", params=[a for a in ARCHITECTURES if a != "lstm"])
def transformer_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return fake_run(ARCHITECTURES[request.param], tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="session")
def rope_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(TINY, tmp_path_factory.mktemp("rope") / "run")


@pytest.fixture(scope="session")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(ARCHITECTURES["lstm"], tmp_path_factory.mktemp("lstm") / "run", seed=1)


@pytest.fixture(scope="session")
def trained_run(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    (root / "small.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    result = CliRunner().invoke(
        app, ["train", str(root / "small.txt"), *TRAIN_FLAGS, "--out", str(root / "run")]
    )
    assert result.exit_code == 0, result.stderr
    return root / "run"


def subject_of(run: Path) -> Subject:
    return open_subject(run)


def config(run: Path, **fields: object) -> InspectConfig:
    return InspectConfig(run=run, **fields)  # type: ignore[arg-type]
