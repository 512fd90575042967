from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli.checkpoints import load_checkpoint
from lmcli.cli import app

TINY_FLAGS = [
    "--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
    "--eval-every", "10", "--threads", "1",
]  # fmt: skip


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def text(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t") / "small.txt"
    path.write_text(shakespeare_text[:50_000], encoding="utf-8")
    return path


def test_train_on_a_text_file_leaves_a_run_directory(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(
        str(text), *TINY_FLAGS, "--max-steps", "20", "--out", str(out), "--json"
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["steps"] == 20
    assert summary["best_val_bpb"] > 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "meta.json", "last.pt", "best.safetensors",
            "last.safetensors", "metrics.jsonl", "data"} <= names  # fmt: skip
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["layers"] == 2 and config["kv-heads"] is None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"train", "eval", "end"} and rows[-1]["kind"] == "end"


def test_table_summary_and_config_file(text: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("layers = 1\nwidth = 16\nheads = 2\ncontext = 8\nkv-heads = 1\nmax-steps = 5\n")
    code, stdout, err = run(str(text), "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "best val bits/byte" in stdout
    assert "kv-heads=1" in err  # the resolved config is printed
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert saved["kv-heads"] == 1 and saved["max-steps"] == 5 and saved["max-time"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heads", "3"], "--heads must divide --width (got 3 and 32)"),
        (["--kv-heads", "3", "--heads", "4"], "--kv-heads must divide --heads (got 3 and 4)"),
        (["--window", "64"], "--window must be between 1 and --context"),
        (["--preset", "huge"], "unknown --preset 'huge'"),
        (["--context", "9000"], "--context 9000 is longer than the validation split"),
        (["--max-time", "soon"], "--max-time must look like"),
        (["--eval-interval", "often"], "--eval-interval must look like"),
        (["--eval-interval", "0s"], "--eval-interval must be positive"),
        (["--lr", "-1"], "--lr must be positive"),
    ],
)
def test_impossible_configs_fail_in_one_line(
    text: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    flags = [*TINY_FLAGS]
    code, stdout, err = run(str(text), *flags, *args, "--out", str(tmp_path / "r"))
    assert code == 1
    assert "\nerror: " in "\n" + err
    assert message in err
    assert "Traceback" not in stdout + err
    assert not (tmp_path / "r" / "config.json").exists()


def test_bad_config_key_and_missing_cuda(text: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text('{"kv_heads": 2}')
    code, _, err = run(str(text), "--config", str(cfg))
    assert code == 1 and "unknown key 'kv_heads'" in err and "kv-heads" in err
    if not torch.cuda.is_available():
        code, _, err = run(str(text), *TINY_FLAGS, "--device", "cuda", "--out", str(tmp_path / "c"))
        assert code == 1 and "CUDA is not available" in err and "--device cpu" in err


def test_resume_refuses_a_different_config_and_allows_a_longer_budget(
    text: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert run(str(text), *TINY_FLAGS, "--max-steps", "10", "--out", str(out), "--json")[0] == 0
    code, _, err = run("--resume", str(out), "--width", "64", "--lr", "0.1")
    assert code == 1
    assert "cannot resume with a different config" in err
    assert "lr 0.008 → 0.1" in err and "width 32 → 64" in err
    code, stdout, err = run("--resume", str(out), "--max-steps", "20", "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 20
    code, _, err = run(str(text), *TINY_FLAGS, "--out", str(out))
    assert code == 1 and "already holds a run" in err and "--resume" in err


def test_lstm_through_the_cli(text: Path, tmp_path: Path) -> None:
    code, stdout, err = run(str(text), "--model", "gru", "--layers", "1", "--width", "32",
                            "--context", "16", "--max-steps", "10", "--out", str(tmp_path / "g"),
                            "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["params"] > 0


def test_ctrl_c_saves_and_exits_130(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lmcli", "train", str(text), *TINY_FLAGS, "--log-every", "1",
           "--max-steps", "100000", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and (not metrics.exists() or metrics.stat().st_size < 200):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"lmcli train --resume {out}" in err
    assert "Traceback" not in err
    state = load_checkpoint(out / "last.pt")
    assert state["step"] >= 1


def test_ddp_with_two_gloo_processes(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "lmcli", "train", str(text), *TINY_FLAGS,
           "--grad-accum", "2", "--max-steps", "10", "--out", str(out), "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert len(summaries) == 1  # only rank 0 prints
    assert summary["steps"] == 10
    assert summary["tokens_seen"] == 10 * 8 * 16 * 2  # global batch = one process with accum 2
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(r)["kind"] == "train" for r in rows) == 1  # one writer (log every 10)


def test_ddp_with_a_time_budget_stops_every_rank_at_the_same_step(
    text: Path, tmp_path: Path
) -> None:
    """Each rank timing itself once let one rank stop a step before the other: gloo aborted on
    the mismatched collectives. The ranks now share one clock (the slowest)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "lmcli", "train", str(text), *TINY_FLAGS, "--max-steps",
           "100000", "--max-time", "3s", "--eval-interval", "0.7s", "--grad-accum", "2",
           "--out", str(out), "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["interrupted"] is False and 3.0 <= summary["train_seconds"] < 4.0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "eval" for r in rows) >= 3  # the timed evaluations, on both ranks


def test_processes_start_the_ranks_themselves_and_stop_them_on_ctrl_c(
    text: Path, tmp_path: Path
) -> None:
    """--processes 2: lmcli starts both ranks (one thread each); one JSON, one metrics writer;
    a Ctrl-C to lmcli alone stops both after their step, saves once, and says how to resume."""
    out = tmp_path / "two"
    base = [sys.executable, "-m", "lmcli", "train", str(text), *TINY_FLAGS, "--grad-accum", "2",
            "--processes", "2"]  # fmt: skip
    done = subprocess.run([*base, "--max-steps", "10", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["steps"] == 10 and summary["tokens_seen"] == 10 * 8 * 16 * 2
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train" for r in rows) == 1  # rank 0 alone writes
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([*base, "--max-steps", "1000000", "--out", str(stopped)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(json.loads(r)["kind"] == "train" for r in _rows(stopped)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("Ctrl-C: stopping after this step") == 1, err
    assert f"lmcli train --resume {stopped}" in err and "Traceback" not in err
    assert load_checkpoint(stopped / "last.pt")["step"] >= 1


def _rows(run_dir: Path) -> list[str]:
    try:
        return (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []


def test_processes_refuse_bad_counts_in_one_line(text: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "lmcli", "train", str(text), *TINY_FLAGS]
    for flags, message in ((["--processes", "0"], "--processes must be at least 1"),
                           (["--processes", "2", "--grad-accum", "3"],
                            "--grad-accum 3 must be a multiple of the 2 processes")):  # fmt: skip
        done = subprocess.run([*base, *flags, "--out", str(tmp_path / "x")], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 1 and done.stderr.count("error: ") == 1, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [("64", "--seq-warmup must look like 64:0.3,128:0.7"),
     ("8:0.5,4:0.7", "--seq-warmup's lengths and fractions must both increase"),
     ("6:0.5", "--seq-warmup's length 6 does not divide --context 16")],
)  # fmt: skip
def test_a_bad_seq_warmup_is_refused_in_one_line(
    text: Path, tmp_path: Path, spec: str, message: str
) -> None:
    code, _, err = run(str(text), *TINY_FLAGS, "--seq-warmup", spec, "--max-steps", "5",
                       "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 1 and err.count("error: ") == 1 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_the_first_run_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lmcli train` with no corpus, a fresh data cache and no network: Tiny Shakespeare comes
    from the copy inside the package."""
    import urllib.request

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("lmcli tried the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data = tmp_path / "fresh-cache"
    monkeypatch.setenv("LMCLI_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(*TINY_FLAGS, "--max-steps", "3", "--quiet")
    assert code == 0, err
    assert (data / "tinyshakespeare.txt").stat().st_size == 1_115_394
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("shakespeare-quick-")
    meta = json.loads((run_dir / "data" / "meta.json").read_text())
    assert meta["corpus"]["sha256"].startswith("86c4e6aa9db7")
    assert (run_dir / "best.safetensors").is_file()


def test_sample_every_prints_a_seeded_sample_at_evaluations(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(str(text), *TINY_FLAGS, "--max-steps", "20", "--sample-every", "1",
                            "--out", str(out), "--json")  # fmt: skip
    assert code == 0, err
    assert err.count("── sample at step") == 2  # TINY_FLAGS evaluate every 10 steps
    assert "── sample at step 10 " in err and "── sample at step 20 " in err
    json.loads(stdout)  # stdout is still one JSON object: the samples went to stderr
    first = err.split("── sample at step 10 ")[1].split("\n")[1]
    assert first and all(ch in text.read_text() for ch in first)  # the corpus's own characters
    code, _, again = run(str(text), *TINY_FLAGS, "--max-steps", "20", "--sample-every", "2",
                         "--out", str(tmp_path / "again"), "--quiet")  # fmt: skip
    assert code == 0 and "sample at step" not in again  # --quiet shows nothing
    losses = [[r["val_loss"] for r in map(json.loads, (d / "metrics.jsonl").open()) if
               r["kind"] == "eval"] for d in (out, tmp_path / "again")]  # fmt: skip
    assert losses[0] == losses[1]  # sampling changed nothing of the training
    code, _, err = run(str(text), *TINY_FLAGS, "--sample-every", "0", "--out", str(tmp_path / "x"))
    assert code == 1 and "--sample-every must be at least 1" in err
