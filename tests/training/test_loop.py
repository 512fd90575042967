from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmcli import rundir
from lmcli.checkpoints import load_checkpoint, load_model, save_checkpoint
from lmcli.corpus.tokenfiles import TokenMeta
from lmcli.errors import InputError
from lmcli.models.transformer import Transformer
from lmcli.presets import resolve
from lmcli.training import loop
from lmcli.training.loop import Logged, TrainingDiverged, train

from .conftest import TINY


def start(token_dir: Path, run_dir: Path, **overrides: object):
    vocab = TokenMeta.load(token_dir).vocab_size
    model_cfg, train_cfg, record = resolve({**TINY, **overrides}, vocab_size=vocab)
    if not run_dir.exists():
        rundir.create(run_dir, token_dir, record)
    return model_cfg, train_cfg


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [("adamw", {}), ("muon", {}), ("muon", {"seq-warmup": "4:0.2,8:0.6"}),
     ("muon", {"tie": False, "embedding-lr": 0.05, "muon-scale": "aspect"}),
     ("adamw", {"embedding-lr": 0.05})],
)  # fmt: skip
def test_resume_is_exact(
    token_dir: Path, tmp_path: Path, optimizer: str, extra: dict[str, object]
) -> None:
    # dropout: the RNG must be restored too; the optimizer: its moments and momenta (and the
    # token table's own group with --embedding-lr); with --seq-warmup the stop at step 20 falls
    # inside the 8-token stage (steps 8 to 23)
    settings = {"max-steps": 40, "dropout": 0.1, "optimizer": optimizer, **extra}
    model_cfg, train_cfg = start(token_dir, tmp_path / "straight", **settings)
    train(model_cfg, train_cfg, token_dir, tmp_path / "straight")

    logged: list[int] = []
    halves = tmp_path / "halves"
    model_cfg, train_cfg = start(token_dir, halves, **settings)
    first = train(
        model_cfg,
        train_cfg,
        token_dir,
        halves,
        on_event=lambda e: logged.append(e.step) if isinstance(e, Logged) else None,
        should_stop=lambda: bool(logged) and logged[-1] >= 20,
    )
    assert first.interrupted and first.steps == 20
    second = train(model_cfg, train_cfg, token_dir, halves, resume=True)
    assert second.steps == 40 and not second.interrupted

    a = load_checkpoint(tmp_path / "straight" / rundir.STATE)
    b = load_checkpoint(halves / rundir.STATE)
    assert a["step"] == b["step"] == 40
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    rows = (halves / rundir.METRICS).read_text().splitlines()
    straight_rows = (tmp_path / "straight" / rundir.METRICS).read_text().splitlines()
    # Step 20 was evaluated before the stop: stopping saves last.pt but evaluates nothing twice.
    assert len(rows) == len(straight_rows)
    evals = [json.loads(r)["step"] for r in rows if '"eval"' in r]
    assert evals == [10, 20, 30, 40]


def test_seq_warmup_trains_on_shorter_rows_with_the_same_tokens(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, int]] = []
    forward = Transformer.forward

    def recording(self: Transformer, idx: torch.Tensor, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        if self.training:
            shapes.append(tuple(idx.shape))
        return forward(self, idx, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Transformer, "forward", recording)
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", **{"max-steps": 10,
                                 "seq-warmup": "4:0.2,8:0.5", "threads": 1})  # fmt: skip
    train(model_cfg, train_cfg, token_dir, tmp_path / "run")
    # batch 8 of context 16: 4 rows of 4 tokens per window, then 2 of 8, then the windows.
    # The first forward is the timed step that the Started event's estimate comes from.
    assert shapes[1:] == [(32, 4)] * 2 + [(16, 8)] * 3 + [(8, 16)] * 5


def test_recurrent_models_train(token_dir: Path, tmp_path: Path) -> None:
    for kind in ("lstm", "gru"):
        model_cfg, train_cfg = start(
            token_dir, tmp_path / kind, model=kind, **{"max-steps": 60, "lr": 1e-2}
        )
        result = train(model_cfg, train_cfg, token_dir, tmp_path / kind)
        assert result.best_val_loss < math.log(model_cfg.vocab_size) - 0.5
        assert (tmp_path / kind / rundir.BEST).is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = loop.build_model

    def poisoned(cfg):  # a model whose loss turns NaN after 30 forward passes
        model = real_build(cfg)
        calls = [0]
        forward = model.forward

        def nan_after(idx, targets=None, cache=None):
            logits, loss = forward(idx, targets, cache)
            calls[0] += model.training  # one warm-up pass, then one per step
            if model.training and calls[0] > 30 and loss is not None:
                loss = loss * float("nan")
            return logits, loss

        model.forward = nan_after
        return model

    monkeypatch.setattr(loop, "build_model", poisoned)
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", **{"max-steps": 100})
    with pytest.raises(TrainingDiverged, match="NaN or infinite at step 30") as info:
        train(model_cfg, train_cfg, token_dir, tmp_path / "run")
    assert "last good checkpoint" in info.value.message
    state = load_checkpoint(tmp_path / "run" / rundir.STATE)
    assert state["step"] == 20  # the evaluation at step 30 never ran
    assert all(torch.isfinite(t).all() for t in state["model"].values())


_SAVER = """
import sys, torch
from pathlib import Path
from lmcli.checkpoints import save_checkpoint
path = Path(sys.argv[1])
big = torch.randn(4_000_000)
step = 0
while True:
    step += 1
    save_checkpoint(path, {"step": step, "base": big, "weights": big + step})
    print(step, flush=True)
"""


def test_kill_9_during_saves_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    for delay in (0.05, 0.23, 0.41):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one save finished
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)
        assert state["step"] >= 1
        # Whole and self-consistent: the weights belong to the step saved with them.
        assert torch.allclose(state["weights"] - state["base"], torch.tensor(float(state["step"])))


def test_foreign_and_truncated_checkpoints_are_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ok.pt", {"step": 1, "w": torch.ones(1000)})
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="not a loadable lmcli checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"not a plain torch.save file \(it asks for posix"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"step": 1}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an lmcli checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


@pytest.mark.gpu
def test_cuda_training_samples_on_cpu(token_dir: Path, tmp_path: Path) -> None:
    model_cfg, train_cfg = start(token_dir, tmp_path / "gpu", device="cuda", **{"max-steps": 20})
    result = train(model_cfg, train_cfg, token_dir, tmp_path / "gpu")
    assert math.isfinite(result.best_val_loss)
    model, _ = load_model(tmp_path / "gpu", "cpu")  # its best.safetensors
    logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert torch.isfinite(logits).all()


def test_out_of_memory_is_a_one_line_error_with_a_hint(
    token_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "_train", exhausted)
    model_cfg, train_cfg = start(token_dir, tmp_path / "oom", **{"max-steps": 5})
    with pytest.raises(loop.LmcliError, match="out of memory") as info:
        train(model_cfg, train_cfg, token_dir, tmp_path / "oom")
    assert "--batch-size" in (info.value.hint or "")


@pytest.mark.parametrize(("interval", "evals"), [(1e-9, 6), (1e9, 1)])
def test_eval_interval_adds_evaluations_by_training_time(
    token_dir: Path, tmp_path: Path, interval: float, evals: int
) -> None:
    # 1e-9 s has always passed after a step: an evaluation after every step (the last one is
    # the final evaluation); 1e9 s never passes: only the final one.
    settings = {"max-steps": 6, "eval-every": 1000, "eval-interval": interval}
    model_cfg, train_cfg = start(token_dir, tmp_path / "run", **settings)
    train(model_cfg, train_cfg, token_dir, tmp_path / "run")
    rows = (tmp_path / "run" / rundir.METRICS).read_text().splitlines()
    steps = [json.loads(r)["step"] for r in rows if json.loads(r)["kind"] == "eval"]
    assert steps == list(range(1, 7))[-evals:]
