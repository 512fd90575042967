"""One regression test per defect of the hostile probe (../shared/reliability/probe-2026-12-01.md),
through the command line: the exit code, a one-line message, nothing changed on disk that should
not be, no traceback. Each test names its defect (D1 ... D38)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcli import rundir
from lmcli.checkpoints import load_checkpoint, save_checkpoint

from .conftest import SM, Ran, cli, proc, refused, snapshot

# -- High: data loss, corruption, silently wrong results ----------------------------------------


def test_d1_train_and_compare_never_replace_a_data_folder_they_did_not_make(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    shutil.copy(small, project / "data" / "corpus.txt")
    (project / "data" / "other.csv").write_text("a,b\n")
    before = snapshot(project)
    monkeypatch.chdir(project)
    refused(cli("train", "data/corpus.txt", *SM, "--out", "."), "--out . is not empty")
    refused(
        cli("compare-rnn", "data/corpus.txt", "--steps", "1", "--out", "."), "--out . is not empty"
    )
    assert snapshot(project) == before


def test_d2_tokenize_force_never_deletes_the_corpus_or_other_files(
    small: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "dir2"
    folder.mkdir()
    shutil.copy(small, folder / "corpus.txt")
    (folder / "notes.md").write_text("mine")
    before = snapshot(folder)
    refused(cli("tokenize", folder / "corpus.txt", "--out", folder, "--force"), "holds the corpus")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    refused(cli("tokenize", small, "--out", other, "--force"), "(it holds notes.md)")
    assert snapshot(folder) == before and (other / "notes.md").read_text() == "mine"


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from lmcli.rundir import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held(tmp_path: Path):
    """A run directory whose lock another process holds, as a training run does."""

    def hold(folder: Path) -> subprocess.Popen[str]:
        folder.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        holders.append(holder)
        return holder

    holders: list[subprocess.Popen[str]] = []
    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def test_d3_d7_a_second_writer_is_refused_before_it_writes(
    small: Path, run_copy: Path, tmp_path: Path, held
) -> None:
    fresh = tmp_path / "conc3"
    holder = held(fresh)
    refused(cli("train", small, *SM, "--out", fresh), f"is in use by process {holder.pid}")
    assert sorted(p.name for p in fresh.iterdir()) == [".lock"]  # no data/ swapped in
    holder = held(run_copy)
    before = snapshot(run_copy)
    refused(cli("train", "--resume", run_copy, "--max-steps", "9"), f"process {holder.pid}")
    assert snapshot(run_copy) == before


def test_d3_two_trainings_into_one_folder_at_once_leave_one_consistent_run(
    small: Path, tmp_path: Path
) -> None:
    other = tmp_path / "latin.txt"
    other.write_text("ünd völlig änders " * 3000, encoding="utf-8")
    out = tmp_path / "both"
    cmd = [sys.executable, "-m", "lmcli", "train", "--out", str(out), *SM]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [*cmd, str(c)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in (small, other)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in runs]
    assert sorted(code for code, _ in results) == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    # Which refusal the loser meets depends on how far the winner got: its lock, its run, or
    # (between the two) the data and files it has already written. Each is one line, nothing
    # touched.
    refusals = ("in use by process", "already holds a run", "is not empty (it holds data")
    assert any(r in loser for r in refusals) and loser.count("error: ") == 1, loser
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert json.loads((out / "meta.json").read_text()) == meta  # data and run agree
    assert cli("train", "--resume", out, "--max-steps", "8", "--quiet").code == 0


def test_d4_resume_refuses_what_it_would_ignore_and_data_that_changed(
    small: Path, run_copy: Path, tmp_path: Path
) -> None:
    refused(cli("train", small, "--resume", run_copy), "the corpus")
    refused(
        cli("train", "--resume", run_copy, "--tokenizer", "bpe", "--vocab-size", "500"),
        "--tokenizer, --vocab-size would be ignored",
    )
    tokens = tmp_path / "d1"
    assert cli("tokenize", small, "--out", tokens).code == 0
    assert cli("train", tokens, *SM, "--out", tmp_path / "retok").code == 0
    shifted = tmp_path / "other_slice.txt"
    shifted.write_text(small.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    assert cli("tokenize", shifted, "--out", tokens, "--force").code == 0
    refused(cli("train", "--resume", tmp_path / "retok", "--max-steps", "9"), "changed since")


def _damage(path: Path) -> None:
    """XOR 256 bytes inside the largest member of a zip archive (its CRC is now wrong)."""
    with zipfile.ZipFile(path) as archive:
        big = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = big.header_offset + 30 + len(big.filename.encode()) + len(big.extra) + 16
    data[start : start + 256] = bytes(b ^ 0xFF for b in data[start : start + 256])
    path.write_bytes(bytes(data))


def test_d5_a_damaged_checkpoint_is_refused(run_copy: Path) -> None:
    _damage(run_copy / "last.pt")
    refused(cli("train", "--resume", run_copy, "--max-steps", "9"), "fails its CRC check")


def test_d6_sigterm_and_sighup_save_like_ctrl_c(tok: Path, tmp_path: Path) -> None:
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        out = tmp_path / f"run-{signum}"
        cmd = [sys.executable, "-m", "lmcli", "train", str(tok), *SM, "--max-steps", "100000",
               "--eval-every", "100000", "--log-every", "1", "--out", str(out)]  # fmt: skip
        job = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        _wait_for_rows(out / "metrics.jsonl", 20)
        job.send_signal(signum)
        _, err = job.communicate(timeout=120)
        assert job.returncode == code, err
        assert f"lmcli train --resume {out}" in err and "Traceback" not in err
        step = load_checkpoint(out / "last.pt")["step"]  # no evaluation ran: saved anyway
        assert step >= 20
        assert not list(out.glob(".*.tmp"))
        assert cli("train", "--resume", out, "--max-steps", str(step + 2)).code == 0


def _wait_for_rows(path: Path, rows: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count("\n") >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {rows} rows")


def test_d6_sigterm_while_tokenizing_leaves_no_temporary(tmp_path: Path, small: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(small.read_text(encoding="utf-8") * 1500, encoding="utf-8")  # ~75 MB
    cmd = [sys.executable, "-m", "lmcli", "tokenize", str(big), "-t", "bpe", "--vocab-size",
           "300", "--out", str(tmp_path / "t" / "big")]  # fmt: skip
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "t").glob(".big.*.tmp")):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143, err
    assert "Traceback" not in err
    assert list((tmp_path / "t").iterdir()) == []


def test_d8_compare_rnn_refuses_a_training_run_folder(small: Path, run_copy: Path) -> None:
    before = snapshot(run_copy)
    refused(cli("compare-rnn", small, "--steps", "1", "--out", run_copy), "holds a training run")
    assert snapshot(run_copy) == before


def _edit_config(weights: Path, **changes: object) -> None:
    """The weights file with its recorded model config changed (its tensors, and so its
    content hash, unchanged): a config that may contradict its weights."""
    import safetensors.numpy
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as f:
        metadata = dict(f.metadata())
    arrays = safetensors.numpy.load_file(str(weights))
    config = json.loads(metadata["lmcli_config"])
    config.update(changes)
    metadata["lmcli_config"] = json.dumps(config)
    safetensors.numpy.save_file(arrays, str(weights), metadata=metadata)


def test_d9_a_config_that_contradicts_its_weights_is_refused(run_copy: Path) -> None:
    _edit_config(run_copy / "best.safetensors", kv_heads=1)
    refused(cli("sample", run_copy, "--max-new-tokens", "5"), "do not fit its model config")


# -- Medium: tracebacks, crashes, half-written output, runaway memory ---------------------------


def test_d10_compare_rnn_on_a_token_dir_makes_its_folder(tok: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp" / "b1"
    ran = cli("compare-rnn", tok, "--steps", "1", "--eval-points", "1", "--sample-tokens", "5",
              "--threads", "1", "--out", out, "--quiet")  # fmt: skip
    assert ran.code == 0, ran.err
    assert (out / "report.json").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dtype", "float8"], "unknown --dtype 'float8'"),
        (["--dtype", "float16"], "not supported on the CPU"),
        (["--device", "meta"], "unknown --device 'meta'"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--context", "9000"], "longer than the validation split"),
    ],
)
def test_d11_bad_settings_leave_no_run_directory(
    tok: Path, small: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    for corpus in (tok, small):
        refused(cli("train", corpus, *SM, *flags, "--out", tmp_path / "g"), message)
        assert not (tmp_path / "g").exists()


def test_d11_a_failure_after_tokenizing_removes_the_run(tmp_path: Path) -> None:
    ten = tmp_path / "ten.txt"
    ten.write_text("hello you\n")
    refused(cli("train", ten, *SM, "--out", tmp_path / "ten"), "longer than the training split")
    assert not (tmp_path / "ten").exists()


def test_d11_divergence_before_the_first_checkpoint_removes_the_run(
    tok: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmcli.training import loop

    monkeypatch.setattr(loop.Trainer, "log", _poisoned_log)
    ran = cli("train", tok, *SM, "--eval-every", "100", "--log-every", "2", "--out", tmp_path / "f")
    refused(ran, "no checkpoint was saved")
    assert not (tmp_path / "f").exists()


def _poisoned_log(self) -> None:  # a loss that turned NaN
    from lmcli.training.loop import _diverged

    raise _diverged(self.state.step, self.run_dir)


def test_d11_a_second_ctrl_c_leaves_no_dead_run(tok: Path, tmp_path: Path) -> None:
    """Stopped at once before any checkpoint: the run is removed; a run killed that early is
    resumable from step 0."""
    out = tmp_path / "int2"
    cmd = [sys.executable, "-m", "lmcli", "train", str(tok), *SM, "--max-steps", "100000",
           "--eval-every", "100000", "--log-every", "1", "--out", str(out)]  # fmt: skip
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(out / "metrics.jsonl", 1)
    job.send_signal(signal.SIGINT)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130 and "Traceback" not in err
    assert not out.exists() or (out / "last.pt").is_file()  # gone, or saved in time
    killed = tmp_path / "killed"
    job = subprocess.Popen([*cmd[:-1], str(killed)], stderr=subprocess.DEVNULL)
    _wait_for_rows(killed / "metrics.jsonl", 1)
    job.kill()
    job.wait()
    assert (killed / "config.json").is_file() and not (killed / "last.pt").exists()
    ran = cli("train", "--resume", killed, "--max-steps", "4", "--json", "--quiet")
    assert ran.code == 0 and json.loads(ran.out)["steps"] == 4


def test_d11_torchrun_reports_a_bad_grad_accum_once_and_leaves_nothing(
    tok: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lmcli", "train", str(tok), *SM, "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("error: --grad-accum 1 must be a multiple of the 2 processes") == 1
    assert not out.exists()


def test_d12_a_full_disk_is_one_line(
    tok: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a short write as a RuntimeError of its zip writer; with no space
    left it is the usual one-line error, and the run keeps its last good checkpoint."""
    from lmcli import files

    real = torch.save
    calls = [0]

    def short_write(obj: object, f: object) -> None:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 28")
        real(obj, f)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(files, "free_disk", lambda path: 0)
    out = tmp_path / "full"
    refused(cli("train", tok, *SM, "--out", out), "no space left on the device holding")
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert not list(out.glob(".*.tmp"))


def test_d12_a_real_full_disk(shakespeare_text: str, tmp_path: Path) -> None:
    """On a 300 KB tmpfs where this machine lets us mount one (root); else the test above."""
    small = tmp_path / "small.txt"  # its tokens take 400 KB
    small.write_text(shakespeare_text[:200_000], encoding="utf-8")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); test_d12_a_full_disk covers it")
    try:
        refused(proc("tokenize", small, "--out", mount / "tok"), "no space left on the device")
        refused(proc("train", small, *SM, "--out", mount / "run"), "no space left")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_d12_a_full_or_closed_stdout(run: Path) -> None:
    with open("/dev/full", "w") as full:
        for extra in ([], ["--json"]):
            ran = proc("sample", run, "--max-new-tokens", "5", *extra, stdout=full)
            refused(ran, "no space left on device (writing the output)")
    ran = proc("sample", run, "--max-new-tokens", "5", stdout=subprocess.DEVNULL,
               preexec_fn=lambda: os.close(1))  # fmt: skip
    refused(ran, "stdout is closed")


@pytest.mark.parametrize("command", ["train", "tokenize", "compare-rnn"])
def test_d13_an_out_that_is_a_file_or_unwritable(command: str, small: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = SM if command == "train" else ["--steps", "1"] if command == "compare-rnn" else []
    refused(cli(command, small, *extra, "--out", afile), "exists and is not a directory")
    assert afile.read_text() == "x"
    refused(cli(command, small, *extra, "--out", "/proc/lmcli-probe"), "cannot create")


def test_d13_tokenize_force_into_the_current_folder(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(small, tmp_path / "corpus.txt")
    monkeypatch.chdir(tmp_path)
    refused(cli("tokenize", "corpus.txt", "--out", ".", "--force"), "holds the corpus")


@pytest.mark.parametrize("device", ["meta", "xpu"])
def test_d14_devices_torch_parses_but_lmcli_does_not_support(
    device: str, tok: Path, run: Path, tmp_path: Path
) -> None:
    message = f"unknown --device '{device}'"
    refused(cli("train", tok, *SM, "--device", device, "--out", tmp_path / "d"), message)
    refused(cli("sample", run, "--device", device), message)
    refused(cli("bench", "--device", device, "--suite", "train", "--quick"), message)
    assert not (tmp_path / "d").exists()


def test_d15_one_seed_range_for_every_command(tok: Path, run: Path, tmp_path: Path) -> None:
    refused(cli("train", tok, *SM, "--seed", "-1", "--out", tmp_path / "a"), "--seed must be")
    refused(cli("sample", run, "--seed", "-1"), "--seed must be a non-negative integer")
    huge = "99999999999999999999999"
    assert cli("train", tok, *SM, "--seed", huge, "--out", tmp_path / "b").code == 0
    assert cli("sample", run, "--seed", huge, "--max-new-tokens", "5").code == 0


def test_d16_a_huge_context_builds_no_context_squared_mask(tok: Path) -> None:
    """Masks are made for the positions at hand: nothing of size context^2 is allocated, and
    a batch too large for the machine is refused by an estimate before any allocation."""
    from lmcli.models.transformer import Transformer
    from tests.variants import TINY

    model = Transformer(TINY.__class__(**{**TINY.__dict__, "context": 100_000}))
    biggest = max(b.numel() for b in model.buffers())
    assert biggest < 100_000 * 100  # the RoPE tables, not a (context, context) square
    ran = cli("train", tok, *SM, "--context", "4096", "--batch-size", "100000")
    refused(ran, "this training run needs ≈")


def test_d17_absurd_sizes_in_files_are_refused_before_allocating(run_copy: Path) -> None:
    config = json.loads((run_copy / "config.json").read_text())
    config["config"]["layers"] = 100_000
    (run_copy / "config.json").write_text(json.dumps(config))
    refused(cli("train", "--resume", run_copy), "--layers must be at most 10,000")
    config["config"].update(layers=1, width=4_000_000, heads=1)
    (run_copy / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    refused(cli("train", "--resume", run_copy, "--max-steps", "9"), "needs ≈")
    assert time.perf_counter() - started < 60  # sized from the config, never built
    _edit_config(run_copy / "best.safetensors", context=1_000_000_000)
    refused(cli("sample", run_copy), "this model's position tables and cache needs ≈")
    _edit_config(run_copy / "best.safetensors", context=16, width=4_000_000)
    refused(cli("sample", run_copy), "do not fit its model config")


def test_d18_huge_generations_are_refused(run: Path) -> None:
    refused(cli("sample", run, "--num-samples", "1000000000", "--max-new-tokens", "10"), "needs ≈")
    refused(cli("sample", run, "--max-new-tokens", "1000000000000"), "needs ≈")


def _tokenizer_variant(run: Path, tmp_path: Path, name: str, edit) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy)
    edit(copy)
    return copy


def _json_edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def bpe_run(small: Path) -> Path:
    out = small.parent / "runs" / "bpe"
    ran = cli("train", small, *SM, "--tokenizer", "bpe", "--vocab-size", "300", "--out", out)
    assert ran.code == 0, ran.err
    return out


def test_d19_malformed_tokenizer_files(run: Path, bpe_run: Path, tmp_path: Path) -> None:
    char = [
        ({"chars": None}, "chars must be a string"),
        ({"chars": "ab\ud800"}, "surrogate code points"),
    ]
    for changes, message in char:
        copy = _tokenizer_variant(
            run,
            tmp_path,
            f"c{len(changes)}{message[:4]}",
            lambda d, c=changes: _json_edit(d / "tokenizer.json", **c),
        )
        refused(cli("sample", copy), message)
    bpe = [
        ({"ranks_file": None}, "ranks_file must be a file name"),
        ({"pattern": "(unclosed"}, "the split pattern is not usable"),
        ({"special_tokens": {"<x>": "abc"}}, "special_tokens must map strings to token ids"),
    ]
    for i, (changes, message) in enumerate(bpe):
        copy = _tokenizer_variant(
            bpe_run, tmp_path, f"b{i}", lambda d, c=changes: _json_edit(d / "tokenizer.json", **c)
        )
        refused(cli("sample", copy), message)

    def ranks(edit_line) -> Path:
        def edit(d: Path) -> None:
            lines = (d / "tokenizer.tiktoken").read_text().splitlines()
            lines = edit_line(lines)
            (d / "tokenizer.tiktoken").write_text("\n".join(lines) + "\n")

        return _tokenizer_variant(bpe_run, tmp_path, f"r{id(edit_line)}", edit)

    not_base64 = ranks(lambda lines: [*lines[:5], "%%%% 5", *lines[6:]])
    refused(cli("sample", not_base64), "the token is not valid base64")
    shared = ranks(lambda lines: [*lines[:-1], lines[-1].split()[0] + " 0"])
    refused(cli("sample", shared), "two tokens share one rank")


def _meta_variant(tok: Path, tmp_path: Path, name: str, edit) -> Path:
    copy = tmp_path / name
    shutil.copytree(tok, copy)
    meta = json.loads((copy / "meta.json").read_text())
    edit(meta, copy)
    (copy / "meta.json").write_text(json.dumps(meta))
    return copy


def _set_id(copy: Path, value: int) -> None:
    ids = np.fromfile(copy / "train.bin", dtype="<u2")
    ids[100] = value
    ids.tofile(copy / "train.bin")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m, d: m["splits"]["val"].update(bytes=0), "splits.val.bytes must be an integer"),
        (lambda m, d: m["splits"]["val"].update(bytes=-19974), "of at least 1 (got -19974)"),
        (lambda m, d: m["splits"]["val"].update(tokens="19974"), "splits.val.tokens must be"),
        (lambda m, d: m.update(dtype="banana"), "dtype must be one of"),
        (lambda m, d: m.update(vocab_size=50), "outside the vocabulary of 50"),
        (lambda m, d: _set_id(d, 60000), "holds token id 60000"),
        (lambda m, d: m["splits"]["train"].update(file="../../small.txt"), "a file name in the"),
    ],
)
def test_d20_d38_malformed_meta_files(tok: Path, tmp_path: Path, edit, message: str) -> None:
    copy = _meta_variant(tok, tmp_path, "m", edit)
    refused(cli("train", copy, *SM, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


def test_d21_a_weights_only_checkpoint_as_last_pt(run_copy: Path) -> None:
    state = load_checkpoint(run_copy / "last.pt")  # as lmcli 0.1's best.pt: config and weights
    weights_only = {k: state[k] for k in ("model_config", "model", "step")}
    save_checkpoint(run_copy / "last.pt", weights_only)
    refused(cli("train", "--resume", run_copy, "--max-steps", "9"), "holds no training state")
    shutil.copy(run_copy / "best.safetensors", run_copy / "last.pt")
    refused(cli("train", "--resume", run_copy, "--max-steps", "9"), "not a whole torch.save")


def test_d22_files_that_are_not_utf8(tok: Path, shakespeare_text: str, tmp_path: Path) -> None:
    config = tmp_path / "binary.toml"
    config.write_bytes(b"\xff\xfe\x00")
    refused(cli("train", tok, *SM, "--config", config), "is not UTF-8 text")
    latin = tmp_path / "latin1.txt"
    text = shakespeare_text[:300_000].replace("e", "é").replace("a", "à")
    latin.write_bytes(text.encode("latin-1"))
    ran = cli("bench", "--corpus", latin, "--suite", "tokenize", "--repeats", "1", "--quick",
              "--json")  # fmt: skip
    assert ran.code == 0, ran.err
    image = tmp_path / "image.txt"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 100)
    refused(cli("bench", "--corpus", image, "--suite", "tokenize", "--quick"), "binary file")


def test_d23_damaged_compare_rnn_state(tok: Path, tmp_path: Path) -> None:
    out = tmp_path / "s1"
    args = ["compare-rnn", tok, "--steps", "1", "--eval-points", "1", "--sample-tokens", "5",
            "--threads", "1", "--out", out, "--quiet"]  # fmt: skip
    assert cli(*args).code == 0
    (out / "transformer" / "result.json").write_text("{broken")
    refused(cli(*args), "transformer/result.json is not valid JSON")
    (out / "settings.json").write_text('{"corpus": ')
    refused(cli(*args), "settings.json is not valid JSON")


def test_d24_bpe_on_a_long_run_of_spaces(tmp_path: Path) -> None:
    spaces = tmp_path / "sp2m.txt"
    spaces.write_text(" " * (2 << 20) + "end\n")
    ran = cli("tokenize", spaces, "-t", "bpe", "--vocab-size", "260", "--out", tmp_path / "t")
    assert ran.code == 0, ran.err


def test_d25_a_truncated_cached_c_engine_is_rebuilt(run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LMCLI_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "lmcli", "sample", str(run), "--max-new-tokens", "5"]
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "(C)" in first.stderr, first.stderr
    (library,) = (tmp_path / "cache").glob("decode-*.so")
    library.write_bytes(library.read_bytes()[:1000])
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "(C)" in again.stderr, again.stderr
    assert again.stdout == first.stdout


def test_d26_temporaries_of_killed_processes_are_swept(
    small: Path, run_copy: Path, tmp_path: Path
) -> None:
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = run_copy / f".best.pt.{dead}.tmp"
    stale.write_bytes(b"x" * 1000)
    assert cli("train", "--resume", run_copy, "--max-steps", "7").code == 0
    assert not stale.exists()
    out = tmp_path / "t" / "small"
    out.parent.mkdir()
    left = out.parent / f".small.{dead}-0123abcd.tmp"
    left.mkdir()
    assert cli("tokenize", small, "--out", out).code == 0
    assert not left.exists()


def test_d27_a_run_directory_can_be_moved(small: Path, tmp_path: Path) -> None:
    assert cli("train", small, *SM, "--out", tmp_path / "r4").code == 0
    (tmp_path / "r4").rename(tmp_path / "moved")
    ran = cli("train", "--resume", tmp_path / "moved", "--max-steps", "8", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["steps"] == 8
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["data"] == "data"


# -- Low: accepts what it should refuse, or says something misleading ---------------------------


def test_d28_binary_anywhere_in_the_file(small: Path, tmp_path: Path) -> None:
    text = small.read_bytes()
    nul = tmp_path / "nul_mid.txt"
    nul.write_bytes(text[:40_000] + b"\x00\x00\x00" + text[40_000:])
    refused(cli("tokenize", nul, "--out", tmp_path / "a"), "a NUL byte at offset 40,000")
    tail = tmp_path / "badtail.txt"
    tail.write_bytes(b"hello world\n" * 10000 + bytes(range(128, 256)) * 2000)
    refused(cli("tokenize", tail, "--out", tmp_path / "b"), "invalid UTF-8 bytes")
    refused(cli("train", nul, *SM, "--out", tmp_path / "c"), "binary")
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr = inf", "--lr must be a finite number"),
        ("beta1 = 5.0", "--beta1 must be in [0, 1)"),
        ("beta2 = -3.0", "--beta2 must be in [0, 1)"),
        ("grad-clip = -1.0", "--grad-clip must be positive"),
        ("weight-decay = -10.0", "--weight-decay must be at least 0"),
    ],
)
def test_d29_training_values_are_validated(
    tok: Path, tmp_path: Path, setting: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(setting + "\n")
    refused(cli("train", tok, *SM, "--config", config, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()
    refused(cli("train", tok, *SM, "--weight-decay", "-5", "--out", tmp_path / "r"), "at least 0")


def test_d30_nan_and_underflowing_settings(run: Path, small: Path, tmp_path: Path) -> None:
    refused(cli("sample", run, "--temperature", "nan"), "--temperature must be at least 0")
    greedy = cli("sample", run, "--temperature", "0", "--max-new-tokens", "50", "--no-stream")
    tiny = cli("sample", run, "--temperature", "1e-310", "--max-new-tokens", "50", "--no-stream")
    assert tiny.code == 0 and tiny.out == greedy.out
    assert "RuntimeWarning" not in tiny.err
    refused(cli("tokenize", small, "-t", "bpe", "--bpe-train-mb", "nan", "--out", tmp_path / "x"),
            "--bpe-train-mb must be a positive number")  # fmt: skip


def test_d31_a_window_pattern_is_checked_without_a_window(tok: Path, tmp_path: Path) -> None:
    refused(cli("train", tok, *SM, "--window-pattern", "XYZ", "--out", tmp_path / "f"), "XYZ")


def test_d32_config_keys_match_the_flags(small: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('eval-interval = "30s"\ntokenizer = "bpe"\nvocab-size = 300\n')
    ran = cli("train", small, *SM, "--config", good, "--out", tmp_path / "r")
    assert ran.code == 0, ran.err
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["tokenizer"] == "bpe300"
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert saved["eval-interval"] == 30.0
    bad = tmp_path / "bad.toml"
    bad.write_text('eval-interval = "abc"\n')
    ran = cli("train", small, *SM, "--config", bad, "--out", tmp_path / "s")
    refused(ran, "--eval-interval must look like 90s, 3m or 1h30m")
    bad.write_text('layers = "two"\n')
    ran = cli("train", small, "--config", bad, "--out", tmp_path / "s")
    refused(ran, "--layers must be an integer (got 'two')")
    assert "NoneType" not in ran.err


def test_d33_flags_that_would_be_ignored_are_refused(tok: Path, run_copy: Path) -> None:
    refused(cli("train", tok, *SM, "--tokenizer", "bpe", "--vocab-size", "300"), "is tokenized")
    refused(cli("train", "--resume", run_copy, "--out", "elsewhere"), "--out would be ignored")
    refused(cli("train", "--resume", run_copy, "--preset", "tiny"), "--preset would be ignored")
    assert not Path("elsewhere").exists()


def test_d34_messages_say_what_is_wrong(
    small: Path, tok: Path, run: Path, bpe_run: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    refused(cli("train", fifo, *SM, "--out", tmp_path / "f"), "is not a regular file (a FIFO)")
    refused(cli("train", "/dev/zero", *SM, "--out", tmp_path / "z"), "(a device)")
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes(small.read_text(encoding="utf-8")[:2000].encode("utf-16"))
    refused(cli("tokenize", utf16), "looks like UTF-16 text")
    loop = tmp_path / "loopa"
    loop.symlink_to(tmp_path / "loopb")
    (tmp_path / "loopb").symlink_to(loop)
    refused(cli("train", loop, *SM, "--out", tmp_path / "l"), "is a symlink loop")
    refused(cli("train", tok, *SM, "--config", tmp_path), "is a directory")
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(cli("tokenize", small, "--out", afile, "--force"), "exists and is not a directory")
    ran = cli("tokenize", small, "-t", "bpe", "--vocab-size", "300", "--bpe-train-mb", "1e-9",
              "--out", tmp_path / "x")  # fmt: skip
    refused(ran, "supports only 0 merges")
    assert "--vocab-size 256" not in ran.err
    ten = tmp_path / "ten.txt"
    ten.write_text("hello you\n")
    ran = cli("bench", "--corpus", ten, "--suite", "tokenize", "--quick")
    refused(ran, "too small for BPE vocab")
    assert "--vocab-size" not in ran.err.split("hint:")[-1]
    ran = cli("compare-rnn", tok, "--steps", "1", "--prompt", "🤖", "--out", tmp_path / "cmp")
    refused(ran, "not in the char vocabulary")
    assert "--drop-unknown" not in ran.err and not (tmp_path / "cmp").exists()
    ran = cli("sample", bpe_run, "--prompt", "\udcff")
    refused(ran, "the prompt is not valid Unicode (it holds lone surrogates)")
    assert "--drop-unknown" not in ran.err
    refused(cli("sample", run, "--prompt", "🤖", "--drop-unknown"), "every character of the prompt")
    garbage = tmp_path / "garbage" / "last.pt"
    shutil.copytree(run, garbage.parent)
    garbage.write_bytes(os.urandom(5000))
    ran = cli("train", "--resume", garbage.parent, "--max-steps", "9")
    refused(ran, "is not a loadable lmcli checkpoint")
    assert "weights_only" not in ran.err and "PyTorch" not in ran.err


def test_d34_no_compiler_message_names_cc(run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CC": "/nonexistent/cc", "LMCLI_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "lmcli", "sample", str(run), "--max-new-tokens",
                           "5"], env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0
    assert "$CC=/nonexistent/cc is not a program" in done.stderr


def test_d34_compile_time_is_not_a_step(tok: Path, tmp_path: Path) -> None:
    ran = cli("train", tok, *[a for a in SM if a != "--quiet"], "--compile", "--max-steps", "2",
              "--out", tmp_path / "c")  # fmt: skip
    assert ran.code == 0, ran.err
    ms = float(ran.err.split("≈")[2].split(" ms per step")[0].replace(",", ""))
    assert ms < 5000  # a compile takes tens of seconds; a step of this model milliseconds


def test_d34_bench_help_and_the_sample_suite(run: Path) -> None:
    ran = cli("bench", "--help", env={"COLUMNS": "250"})
    assert "256 KB of text" in ran.out and "1 MB" not in ran.out
    ran = cli("bench", "--suite", "sample", "--preset", "tiny", "--repeats", "1", "--quick",
              "--sample-tokens", "20")  # fmt: skip
    assert ran.code == 0, ran.err
    assert "text: ;" not in ran.err


def test_d35_threads_are_capped_at_the_cores(tok: Path, tmp_path: Path) -> None:
    ran = cli("train", tok, *[a for a in SM if a != "--quiet"], "--threads", "999",
              "--out", tmp_path / "t")  # fmt: skip
    assert ran.code == 0
    assert f"--threads 999 is more than the {os.cpu_count()} cores" in ran.err


def test_d36_resume_restores_a_deleted_tokenizer(run_copy: Path) -> None:
    (run_copy / "tokenizer.json").unlink()
    assert cli("train", "--resume", run_copy, "--max-steps", "8").code == 0
    assert cli("sample", run_copy, "--max-new-tokens", "5").code == 0


def test_d37_a_stop_never_evaluates_a_step_twice(tok: Path, tmp_path: Path) -> None:
    from lmcli.corpus.tokenfiles import TokenMeta
    from lmcli.presets import resolve
    from lmcli.training.loop import Evaluated, train

    model_cfg, train_cfg, record = resolve(
        {"layers": 1, "width": 32, "heads": 2, "context": 16, "batch-size": 4, "threads": 1,
         "max-steps": 50, "eval-every": 5}, vocab_size=TokenMeta.load(tok).vocab_size,
    )  # fmt: skip
    run_dir = tmp_path / "r"
    with rundir.new_run(run_dir):
        rundir.create(run_dir, tok, record)
        seen: list[int] = []
        result = train(model_cfg, train_cfg, tok, run_dir,
                       on_event=lambda e: seen.append(e.step) if isinstance(e, Evaluated) else None,
                       should_stop=lambda: bool(seen))  # fmt: skip
    assert result.interrupted and seen == [5]
    steps = [r["step"] for r in rundir.read_metrics(run_dir) if r["kind"] == "eval"]
    assert steps == [5]


def test_d38_file_references_stay_inside_their_folder(bpe_run: Path, tmp_path: Path) -> None:
    copy = _tokenizer_variant(
        bpe_run,
        tmp_path,
        "passwd",
        lambda d: _json_edit(d / "tokenizer.json", ranks_file="/etc/passwd"),
    )
    refused(cli("sample", copy), "ranks_file must be a file name in the same folder")


def test_every_refusal_above_leaves_the_shared_run_intact(run: Path) -> None:
    """The session's RUN, which every test above read, is still a good run."""
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 6
    assert isinstance(cli("sample", run, "--max-new-tokens", "3"), Ran)
