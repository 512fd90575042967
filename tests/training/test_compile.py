"""--compile: auto on a CPU for runs long enough to repay it, every training length compiled
before the clock starts, and a CPU that cannot compile trains eagerly (auto) or says so (--compile).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lmcli.config import TrainConfig
from lmcli.training import loop
from lmcli.training.loop import RunState, Started, expected_train_seconds, train, training_lengths

from .test_loop import start


def test_expected_train_seconds_is_the_budget_that_ends_first() -> None:
    state = RunState(step=100, train_seconds=30.0)
    assert expected_train_seconds(TrainConfig(max_time=180.0), state, 0.1) == 150.0
    assert expected_train_seconds(TrainConfig(max_steps=2000), state, 0.1) == pytest.approx(190.0)
    both = TrainConfig(max_time=180.0, max_steps=400)
    assert expected_train_seconds(both, state, 0.1) == pytest.approx(30.0)
    assert expected_train_seconds(TrainConfig(), state, 0.1) == math.inf  # until Ctrl-C


def test_training_lengths_are_the_warmup_stages_and_the_context() -> None:
    assert training_lengths(TrainConfig(seq_warmup="64:0.3,128:0.7"), 256) == [64, 128, 256]
    assert training_lengths(TrainConfig(seq_warmup="64:0.3,512:0.7"), 256) == [64, 256]
    assert training_lengths(TrainConfig(), 256) == [256]
    assert training_lengths(TrainConfig(seq_warmup="none"), 128) == [128]


def _started(events: list[object]) -> Started:
    return next(e for e in events if isinstance(e, Started))


def test_a_short_cpu_run_is_not_compiled(token_dir: Path, tmp_path: Path) -> None:
    events: list[object] = []
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", **{"max-steps": 5})
    result = train(model_cfg, train_cfg, token_dir, tmp_path / "run", on_event=events.append)
    assert not _started(events).compiled and result.compile_seconds == 0.0


def test_auto_leaves_a_recurrent_model_eager(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "COMPILE_PAYS_SECONDS", 0.0)  # every run is "long" now
    events: list[object] = []
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", model="lstm", **{"max-steps": 3})
    train(model_cfg, train_cfg, token_dir, tmp_path / "run", on_event=events.append)
    assert not _started(events).compiled


def test_auto_compiles_a_long_cpu_run_before_the_clock_and_learns_the_same(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max-steps": 12, "seq-warmup": "4:0.25,8:0.5"}
    model_cfg, train_cfg = start(token_dir, tmp_path / "eager", **settings)
    eager = train(model_cfg, train_cfg, token_dir, tmp_path / "eager")

    monkeypatch.setattr(loop, "COMPILE_PAYS_SECONDS", 0.0)  # every run is "long" now
    compiles: list[tuple[int, ...]] = []
    compiled_model = loop.Trainer._compiled_model

    def counting(self: loop.Trainer) -> nn.Module:
        inner = compiled_model(self)

        class Counting(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
                compiles.append(tuple(x.shape))
                return self.inner(x, y)

        return Counting()

    monkeypatch.setattr(loop.Trainer, "_compiled_model", counting)
    events: list[object] = []
    model_cfg, train_cfg = start(token_dir, tmp_path / "compiled", **settings)
    result = train(model_cfg, train_cfg, token_dir, tmp_path / "compiled", on_event=events.append)

    started = _started(events)
    assert started.compiled
    assert any("compile:" in n and "sequence length 4, 8, 16" in n for n in started.notes)
    # batch 8 of context 16: rows of 4, 8 and 16, each compiled once before the clock started,
    # then the timed estimate, then 3 + 3 + 6 training steps.
    warm = [(32, 4), (16, 8), (8, 16), (32, 4)]
    assert compiles == warm + [(32, 4)] * 3 + [(16, 8)] * 3 + [(8, 16)] * 6
    # Compiling is not training: the clock holds the 12 steps of a tiny model, not the compiles.
    assert result.compile_seconds > 0 and result.train_seconds < result.compile_seconds
    assert result.wall_seconds > result.compile_seconds
    # The same batches, the same arithmetic up to the fused kernels' rounding.
    assert result.best_val_loss == pytest.approx(eager.best_val_loss, abs=2e-3)


def test_auto_trains_eagerly_where_compiling_fails(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(nn.Module):
        def forward(self, *args: object) -> None:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(details)")

    monkeypatch.setattr(loop, "COMPILE_PAYS_SECONDS", 0.0)
    monkeypatch.setattr(loop.Trainer, "_compiled_model", lambda self: Broken())
    events: list[object] = []
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", **{"max-steps": 5})
    result = train(model_cfg, train_cfg, token_dir, tmp_path / "run", on_event=events.append)
    started = _started(events)
    assert not started.compiled and result.steps == 5 and math.isfinite(result.best_val_loss)
    assert (
        "compile: torch.compile failed (InvalidCxxCompiler: No working C++ compiler found); "
        "training without it"
    ) in started.notes


@pytest.mark.slow
def test_compile_without_a_cxx_compiler_is_a_one_line_error(
    token_dir: Path, tmp_path: Path
) -> None:
    # A fresh process with an empty inductor cache, so that compiling needs the compiler.
    env = {**os.environ, "CXX": "/nonexistent/c++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c")}
    args = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--threads", "1",
            "--max-steps", "2", "--compile", "--out", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "lmcli", "train", str(token_dir), *args],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error: torch.compile failed on cpu:" in done.stderr
    assert "without --compile" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_new_thread_count_is_compiled_off_the_clock(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thread tuner measures again when steps slow down; a compiled model then needs kernels
    # for the thread count it chose, and those are compiled outside the training clock too.
    # (The "compiled" model is the eager one here: what is tested is when lmcli compiles.)
    monkeypatch.setattr(loop, "COMPILE_PAYS_SECONDS", 0.0)
    monkeypatch.setattr(loop.Trainer, "_compiled_model", lambda self: self.model)
    retuned: list[float] = []

    def observe(self: loop.ThreadTuner, step_seconds: float, now: float) -> bool:
        if retuned:
            return False
        retuned.append(now)
        self.tune(now)
        return True

    monkeypatch.setattr(loop.ThreadTuner, "observe", observe)
    compiles: list[tuple[int, float]] = []
    compile_once = loop.Trainer._compile

    def counting(self: loop.Trainer) -> str:
        compiles.append((self.state.step, self.state.train_seconds))
        return compile_once(self)

    monkeypatch.setattr(loop.Trainer, "_compile", counting)
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", threads=None, **{"max-steps": 12})
    result = train(model_cfg, train_cfg, token_dir, tmp_path / "run")
    # At the start, then at the first log (step 5), right after the tuner chose again.
    assert len(retuned) == 1 and [step for step, _ in compiles] == [0, 5]
    assert result.steps == 12 and result.compile_seconds > 0
