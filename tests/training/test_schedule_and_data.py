from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcli.config import TrainConfig, parse_duration
from lmcli.corpus.tokenfiles import open_tokens
from lmcli.errors import ConfigError
from lmcli.training.data import TrainBatches, val_token_count, val_windows
from lmcli.training.schedule import check_seq_warmup, learning_rate, progress, seq_len


def test_warmup_then_cosine_to_the_floor() -> None:
    cfg = TrainConfig(lr=1.0, warmup=10, max_steps=110, min_lr_ratio=0.1)
    rates = [learning_rate(cfg, s, 0.0) for s in range(110)]
    assert rates[0] < rates[5] < rates[9] < 1.0
    assert rates[10] > 0.95  # the cosine spans the whole budget, warmup included
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert learning_rate(cfg, 110, 0.0) == pytest.approx(0.1)


def test_warmup_stable_decay_holds_the_peak_then_falls_linearly_to_the_floor() -> None:
    cfg = TrainConfig(lr=1.0, warmup=10, max_steps=100, min_lr_ratio=0.1, decay_fraction=0.4)
    rates = [learning_rate(cfg, s, 0.0) for s in range(101)]
    assert rates[0] < rates[9] < 1.0
    assert all(r == 1.0 for r in rates[10:61])  # stable until 60 % of the budget
    assert rates[80] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the line
    assert rates[100] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(rates[60:]))
    timed = TrainConfig(lr=2.0, warmup=0, max_time=180.0, decay_fraction=0.5)
    assert learning_rate(timed, 5, 90.0) == 2.0 and learning_rate(timed, 5, 135.0) == 1.0
    with pytest.raises(ConfigError, match="--decay-fraction must be in"):
        TrainConfig(decay_fraction=0.0).validate()


def test_seq_warmup_shortens_the_rows_until_each_stage_ends() -> None:
    cfg = TrainConfig(max_steps=100, seq_warmup="32:0.25,64:0.5")
    cfg.validate()
    lengths = [seq_len(cfg, 128, step, 0.0) for step in range(100)]
    assert lengths == [32] * 25 + [64] * 25 + [128] * 50
    timed = TrainConfig(max_time=100.0, seq_warmup="64:0.3")
    assert seq_len(timed, 128, 10_000, 29.9) == 64 and seq_len(timed, 128, 5, 30.0) == 128
    assert seq_len(TrainConfig(max_steps=10), 128, 0, 0.0) == 128  # none: the context
    check_seq_warmup(cfg, 128)
    check_seq_warmup(cfg, 64 * 3)  # 32 and 64 divide 192


@pytest.mark.parametrize(
    "text", ["64", "64:", ":0.3", "a:0.3", "64:1.0", "64:0", "128:0.3,64:0.7", "64:0.5,128:0.3"]
)
def test_seq_warmup_refuses_what_is_not_a_stage_list(text: str) -> None:
    with pytest.raises(ConfigError, match="--seq-warmup"):
        TrainConfig(seq_warmup=text).validate()


def test_seq_warmup_refuses_lengths_that_do_not_split_the_context() -> None:
    cfg = TrainConfig(seq_warmup="48:0.3")
    cfg.validate()
    with pytest.raises(ConfigError, match="length 48 does not divide --context 128"):
        check_seq_warmup(cfg, 128)
    preset_like = TrainConfig(seq_warmup="64:0.3,128:0.7")
    with pytest.raises(ConfigError, match="length 64 does not divide --context 96"):
        check_seq_warmup(preset_like, 96)


def test_seq_warmup_past_the_context_or_none_keeps_the_windows_whole() -> None:
    # The default preset's stages with a user's shorter --context: 64 fits 64, 128 past it.
    cfg = TrainConfig(max_steps=10, seq_warmup="64:0.3,128:0.7")
    check_seq_warmup(cfg, 64)
    check_seq_warmup(cfg, 16)
    assert [seq_len(cfg, 64, step, 0.0) for step in range(10)] == [64] * 10
    off = TrainConfig(max_steps=10, seq_warmup="none")
    off.validate()
    assert seq_len(off, 128, 0, 0.0) == 128


def test_time_budget_drives_the_decay() -> None:
    cfg = TrainConfig(lr=1.0, warmup=0, max_time=100.0)
    assert progress(cfg, 10_000, 50.0) == pytest.approx(0.5)
    assert learning_rate(cfg, 10_000, 50.0) == pytest.approx(0.5)
    both = TrainConfig(lr=1.0, warmup=0, max_time=100.0, max_steps=10)
    assert progress(both, 8, 10.0) == pytest.approx(0.8)  # whichever is further along


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("3m", 180), ("1h30m", 5400), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3 minutes", "m3", "3m3"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-time"):
        parse_duration(text)


def test_batches_depend_only_on_seed_step_and_micro(token_dir: Path) -> None:
    tokens = open_tokens(token_dir, "train")
    a = TrainBatches(tokens, 4, 16, seed=1)
    b = TrainBatches(tokens, 4, 16, seed=1)
    x1, y1 = a.get(7, 1)
    a.get(3, 0)
    x2, y2 = b.get(7, 1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one
    assert not torch.equal(a.get(7, 0)[0], x1)
    assert not torch.equal(TrainBatches(tokens, 4, 16, seed=1, rank=1).get(7, 1)[0], x1)


def test_validation_covers_every_window_once() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    xs, ys = zip(*val_windows(tokens, context=16, batch_size=7), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (62, 16)
    assert torch.equal(x.flatten(), torch.arange(992))
    assert torch.equal(y.flatten(), torch.arange(1, 993))
    assert val_token_count(tokens, 16) == 992
