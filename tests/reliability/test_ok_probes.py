"""The hostile probe's "ok" probes (../shared/reliability/probe-2026-12-01.md), kept as they were:
refusals stay one-line refusals, and what worked still works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmcli.checkpoints import save_checkpoint

from .conftest import SM, cli, proc, refused, snapshot
from .test_probe import _edit_config, _wait_for_rows

# (arguments after `lmcli train TOK SM`, message)
TRAIN_FLAGS = [
    (["--max-time", "0"], "must be positive (got 0.0)"),
    (["--max-time", "abc"], "must look like 90s, 3m or 1h30m"),
    (["--max-time=-5s"], "must look like 90s, 3m or 1h30m"),
    (["--lr=-1"], "--lr must be positive"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--context", "0"], "--context must be at least 1"),
    (["--context", "100000"], "is longer than the training split"),
    (["--heads", "0"], "--heads must be at least 1"),
    (["--heads", "4", "--kv-heads", "3"], "--kv-heads must divide --heads (got 3 and 4)"),
    (["--window", "0"], "--window must be between 1 and --context"),
    (["--window", "8", "--window-pattern", "XYZ"], "--window-pattern must be letters"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--grad-accum", "0"], "--grad-accum must be at least 1"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--eval-every", "0"], "--eval-every must be at least 1"),
    (["--log-every", "0"], "--log-every must be at least 1"),
    (["--warmup", "-1"], "--warmup must be at least 0"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio must be in [0, 1]"),
    (["--muon-lr", "0"], "--muon-lr must be positive"),
    (["--embedding-lr", "0"], "--embedding-lr must be positive"),
    (["--muon-scale", "fan"], "--muon-scale must be one of tall, aspect"),
    (["--optimizer", "sgd"], "--optimizer must be one of adamw, muon"),
    (["--model", "rnn"], "--model must be one of transformer/lstm/gru"),
    (["--pos", "abc"], "--pos must be one of"),
    (["--norm", "batchnorm"], "--norm must be one of"),
    (["--embedding", "32"], "--embedding applies to --model lstm or gru only"),
    (["--model", "lstm", "--tie", "--embedding", "16"], "--tie needs --embedding equal to --width"),
    (["--eval-interval", "0"], "--eval-interval must be positive"),
    (["--eval-interval", "abc"], "--eval-interval must look like"),
    (["--width", "12", "--heads", "4"], "--pos rope needs an even head size"),
    (["--preset", "nonsense"], "unknown --preset 'nonsense'"),
]
if not torch.cuda.is_available():
    TRAIN_FLAGS.append((["--device", "cuda:1"], "CUDA is not available on this machine"))


@pytest.mark.parametrize(("flags", "message"), TRAIN_FLAGS)
def test_train_flags_refused(tok: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    refused(cli("train", tok, *SM, *flags, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


def test_train_flags_that_work(tok: Path, tmp_path: Path) -> None:
    for i, flags in enumerate(
        (["--dtype", "bfloat16"], ["--max-time", "99999999999999999999h"], ["--seed", "0"])
    ):
        ran = cli("train", tok, *SM, *flags, "--out", tmp_path / str(i))
        assert ran.code == 0, (flags, ran.err)


# (file contents, extra flags, exit code, message)
CONFIG_FILES = [
    ("c.toml", "foo = 3", [], 1, "unknown key 'foo'"),
    ("c.toml", 'layers = "two"', ["--layers", "1"], 0, ""),
    ("c.toml", 'layers = "two"', [], 1, "--layers must be an integer (got 'two')"),
    ("c.toml", "layers = 2.5", [], 1, "--layers must be an integer"),
    ("c.toml", "layers = 2.5", ["--layers", "1"], 0, ""),
    ("c.toml", "this is { not toml", [], 1, "--config"),
    ("c.toml", "", [], 0, ""),
    ("c.toml", "[model]\nlayers = 2", [], 1, "--model must be one of"),
    ("c.toml", 'max-time = "abc"', [], 1, "--max-time must look like"),
    ("c.toml", "max-time = -5", [], 1, "--max-time must be positive"),
    ("c.toml", "lr = nan", [], 1, "--lr must be a finite number"),
    ("c.yaml", "layers: 2", [], 1, "use a .toml or .json file"),
    ("c.json", "[1,2,3]", [], 1, "expected a table of keys"),
    ("c.json", '{"layers": 2, "layers": "x"}', [], 1, "--layers must be an integer (got 'x')"),
    ("c.toml", "max-steps = 0", [], 1, "--max-steps must be at least 1"),
    ("c.toml", 'compile = "yes"', [], 1, "--compile must be true or false"),
    ("c.toml", 'preset = "nonsense"', [], 1, "unknown --preset 'nonsense'"),
]


@pytest.mark.parametrize(("name", "content", "flags", "code", "message"), CONFIG_FILES)
def test_config_files(
    tok: Path, tmp_path: Path, name: str, content: str, flags: list[str], code: int, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    # SM without --layers and --max-steps, which the files set
    base = ["--width", "32", "--heads", "2", "--context", "16", "--batch-size", "4", "--threads",
            "1", "--quiet", *(["--max-steps", "2"] if "max-time" in content else
                              ["--max-time", "0.3s"])]  # fmt: skip
    args = ["train", tok, *base, "--config", path, *flags, "--out", tmp_path / "r"]
    if code == 0:
        ran = cli(*args)
        assert ran.code == 0, ran.err
    else:
        refused(cli(*args), message)
    refused(cli("train", tok, "--config", tmp_path / "nope.toml"), "no such file")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_corpora_that_are_refused(small: Path, tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 100
    text = small.read_bytes()
    cases = [
        (_write(tmp_path / "image.txt", png), "binary"),
        (_write(tmp_path / "archive.txt", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 50), "binary"),
        (_write(tmp_path / "nul_early.txt", text[:1000] + b"\x00" + text[1000:]), "NUL byte"),
        (_write(tmp_path / "allbad.txt", bytes(range(128, 256)) * 512), "binary"),
        (_write(tmp_path / "bomonly.txt", b"\xef\xbb\xbf"), "too small to hold out"),
        (_write(tmp_path / "bomnl.txt", b"\xef\xbb\xbf\n"), "holds no text"),
        (_write(_folder(tmp_path / "pictures") / "a.png", png).parent, "holds no text file"),
    ]
    for path, message in cases:
        refused(cli("tokenize", path, "--out", tmp_path / "t"), message)
        refused(cli("train", path, *SM, "--out", tmp_path / "r"), message)
        assert not (tmp_path / "t").exists() and not (tmp_path / "r").exists()
    latin = _write(tmp_path / "latin1.txt", "Café crème\n".encode("latin-1") * 3000)
    refused(cli("tokenize", latin, "--exact", "--out", tmp_path / "t"), "invalid UTF-8 near byte")


def test_corpora_that_work(small: Path, tmp_path: Path) -> None:
    text = small.read_bytes()
    cases = {
        "ten.txt": b"hello\nyou\n",
        "oneline.txt": text.replace(b"\n", b" ")[:1_000_000],
        "latin1.txt": "Café crème\n".encode("latin-1") * 3000,
        "crlf.txt": text.replace(b"\n", b"\r\n"),
        "cronly.txt": text.replace(b"\n", b"\r"),
        "surrogates.txt": text + "ok \udcff\n".encode("utf-8", "surrogatepass") * 300,
        "spaces é 名前.txt": text,
    }
    for name, data in cases.items():
        path = _write(tmp_path / name, data)
        ran = cli("tokenize", path, "--out", tmp_path / f"t-{name}", "--json")
        assert ran.code == 0, (name, ran.err)
    summary = json.loads(cli("tokenize", tmp_path / "latin1.txt", "--json", "--out",
                             tmp_path / "t2").out)  # fmt: skip
    assert summary["text_changes"]["invalid_bytes_replaced"] == 6000
    ran = cli("train", tmp_path / "ten.txt", *SM, "--context", "2", "--out", tmp_path / "ten")
    assert ran.code == 0, ran.err
    ran = cli("train", tmp_path / "spaces é 名前.txt", *SM, "--out", tmp_path / "名前")
    assert ran.code == 0 and cli("sample", tmp_path / "名前", "--max-new-tokens", "5").code == 0


def test_only_newlines_trains_and_samples(tmp_path: Path) -> None:
    path = _write(tmp_path / "newlines.txt", b"\n" * 5000)
    assert cli("tokenize", path, "--out", tmp_path / "t").code == 0
    assert cli("train", path, *SM, "--out", tmp_path / "r").code == 0
    ran = cli("sample", tmp_path / "r", "--top-p", "0.5", "--max-new-tokens", "5")
    assert ran.code == 0 and ran.out == "\n" * 6


@pytest.mark.parametrize(
    ("content", "vocab"),
    [("a" * 1_000_000, "270"), (" " * 1_000_000, "260"),
     (("x" * 200_000 + "\n") * 3, "258"), ("text " * 1000 + " " * 4_500_000 + " text", "270")],
)  # fmt: skip
def test_bpe_on_odd_text(tmp_path: Path, content: str, vocab: str) -> None:
    path = tmp_path / "odd.txt"
    path.write_text(content)
    ran = cli("tokenize", path, "-t", "bpe", "--vocab-size", vocab, "--out", tmp_path / "t")
    assert ran.code == 0, ran.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--val-fraction", "0"], "--val-fraction must be between 0 and 1"),
        (["--val-fraction", "1"], "--val-fraction must be between 0 and 1"),
        (["--val-fraction", "nan"], "--val-fraction must be between 0 and 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["-t", "bpe", "--bpe-train-mb", "0"], "--bpe-train-mb must be a positive number"),
        (["--vocab-size", "300"], "--vocab-size applies to --tokenizer bpe only"),
        (["-t", "bpe", "--vocab-size", "256"], "must be at least 257"),
        (["-t", "bpe", "--vocab-size", "99999999999"], "must be at most"),
        (["-t", "nonsense"], "unknown tokenizer 'nonsense'"),
    ],
)
def test_tokenize_flags_refused(
    small: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    refused(cli("tokenize", small, *flags, "--out", tmp_path / "t"), message)


def test_tokenize_and_train_refusals_that_leave_nothing(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for fraction in ("1e-12", "0.9999999"):
        assert (
            cli("tokenize", small, "--val-fraction", fraction, "--out", tmp_path / fraction).code
            == 0
        )
    monkeypatch.chdir(tmp_path)
    ran = cli("train", small, *SM, "--tokenizer", "bpe", "--vocab-size", "70000", "--out", "big")
    refused(ran, "supports only")
    assert not (tmp_path / "big").exists()
    afile = _write(tmp_path / "afile", b"x")
    refused(cli("tokenize", "shakespeare", "--data-dir", afile), "cannot create the data directory")
    refused(cli("tokenize", small, "-t", "gpt2", "--out", tmp_path / "g"), "offline or not cached")


def test_named_corpora_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcli.corpus import named

    monkeypatch.setattr(named, "_DOWNLOAD_TIMEOUT_S", 2.0)
    recipes = json.loads((Path(named.__file__).parents[2] / "data" / "corpora.json").read_text())
    recipes["corpora"]["shakespeare"]["url"] = "http://127.0.0.1:9/input.txt"
    del recipes["corpora"]["shakespeare"]["bundled"]  # a corpus that must be downloaded
    fake = tmp_path / "corpora.json"
    fake.write_text(json.dumps(recipes))
    monkeypatch.setattr(named, "_recipes_file", lambda: (fake, True))
    monkeypatch.chdir(tmp_path)
    refused(cli("tokenize", "shakespeare"), "could not download shakespeare")
    ran = cli("train", "--max-steps", "5")
    refused(ran, "could not download shakespeare")
    assert "hint: offline?" in ran.err and not (tmp_path / "runs").exists()


def test_runs_resume_and_concurrency(tok: Path, small: Path, run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    refused(cli("train", "--resume", tmp_path / "nonexistent"), "is not an lmcli run directory")
    refused(cli("train", "--resume", small), "is not an lmcli run directory")
    refused(cli("train", "--resume", tok), "is not an lmcli run directory")
    ran = cli("train", "--resume", copy, "--layers", "3", "--lr", "0.1")
    refused(ran, "cannot resume with a different config")
    assert "layers 1 → 3" in ran.err and "lr 0.008 → 0.1" in ran.err
    assert cli("train", "--resume", copy).code == 0  # finished: evaluates nothing new
    assert cli("train", "--resume", copy, "--max-steps", "5").code == 0
    data = copy / "last.pt"
    data.write_bytes(data.read_bytes()[:2000])
    refused(cli("train", "--resume", copy), "is not a loadable lmcli checkpoint")
    data.write_bytes(b"")
    refused(cli("train", "--resume", copy), "is not a loadable lmcli checkpoint")
    own = tmp_path / "own"
    assert cli("train", small, *SM, "--out", own).code == 0
    shutil.rmtree(own / "data")
    refused(cli("train", "--resume", own), "is not a token directory (no meta.json)")


def test_ctrl_c_once_saves_and_sampling_during_training_reads_whole_files(
    tok: Path, tmp_path: Path
) -> None:
    out = tmp_path / "race"
    cmd = [sys.executable, "-m", "lmcli", "train", str(tok), *SM, "--max-steps", "100000",
           "--eval-every", "5", "--log-every", "1", "--out", str(out)]  # fmt: skip
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    _wait_for_rows(out / "metrics.jsonl", 10)
    for _ in range(5):  # best.pt is replaced every 5 steps meanwhile: never torn
        assert cli("sample", out, "--max-new-tokens", "3").code == 0
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130 and f"lmcli train --resume {out}" in err


def test_stdout_and_stderr_closed_early(run: Path, small: Path, tok: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lm = f"{sys.executable} -m lmcli"
    for command in (
        f"{lm} sample {run} --max-new-tokens 2000 | head -c 10",
        f"{lm} sample {run} --stream --max-new-tokens 2000 | head -c 10",
        f"{lm} sample {run} --json --max-new-tokens 200 | head -c 10",
        f"{lm} sample {run} --num-samples 50 --max-new-tokens 200 | head -c 10",
        f"{lm} tokenize {small} --out {tmp_path / 't'} | head -c 10",
        f"{lm} train {tok} {' '.join(SM)} --out {tmp_path / 'r'} | head -c 10",
        f"{lm} train {tok} {' '.join(SM)} --out {tmp_path / 'r2'} 2>&-",
    ):
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, command


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--context-window", "0"], "--context-window must be at least 1"),
        (["--context-window", "17"], "larger than the model's context (16 tokens)"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--prompt", ""], "the prompt is empty"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--top-p", "nan"], "--top-p must be in (0, 1]"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--stream", "--json"], "cannot be combined"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--prompt", "🤖 hello"], "characters not in the char vocabulary: '🤖'"),
    ],
)
def test_sample_flags_refused(run: Path, flags: list[str], message: str) -> None:
    refused(cli("sample", run, *flags), message)


def test_sampling_that_works(run: Path, tmp_path: Path) -> None:
    greedy = [
        cli("sample", run, *flags, "--max-new-tokens", "60", "--no-stream").out
        for flags in (["--temperature", "0"], ["--top-k", "1"], ["--temperature", "1e-9"],
                      ["--top-p", "1e-9"])
    ]  # fmt: skip
    assert len(set(greedy)) == 1
    for flags in (["--temperature", "1e9"], ["--temperature", "inf"], ["--context-window", "1"],
                  ["--seed", str(10**26)], ["--threads", "999"]):  # fmt: skip
        assert cli("sample", run, *flags, "--max-new-tokens", "20").code == 0, flags
    long_prompt = tmp_path / "long.txt"
    long_prompt.write_text("ROMEO " * 1000)
    ran = cli("sample", run, "--prompt-file", long_prompt, "--max-new-tokens", "5")
    assert ran.code == 0 and ran.out.startswith("ROMEO")
    bad = _write(tmp_path / "surr.txt", b"\xff\xfe bad")
    refused(cli("sample", run, "--prompt-file", bad), "is not UTF-8 text")
    refused(cli("sample", run, "--prompt-file", tmp_path), "is a directory, not a text file")
    ran = cli("sample", run, "--num-samples", "500", "--max-new-tokens", "10", "--json")
    assert ran.code == 0 and len(json.loads(ran.out)["samples"]) == 500


def test_sampling_engines_and_caches(run: Path, tmp_path: Path) -> None:
    for env in ({"CC": "/bin/false"}, {"LMCLI_CACHE_DIR": str(_write(tmp_path / "f", b"x"))},
                {"LMCLI_CACHE_DIR": "/proc/lmcli"}):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "lmcli", "sample", str(run),
                               "--max-new-tokens", "5"], env={**os.environ, **env},
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0 and "(torch; no C engine:" in done.stderr, (env, done.stderr)


def test_broken_checkpoints_for_sampling(run: Path, tmp_path: Path) -> None:
    raw = (run / "best.safetensors").read_bytes()
    flipped = bytearray(raw)
    flipped[-50] ^= 0xFF
    cases = {
        "trunc": (raw[:2000], "not a readable safetensors file"),
        "trunc_end": (raw[:-10], "not a readable safetensors file"),
        "zero": (b"", "not a readable safetensors file"),
        "random": (os.urandom(4000), "not a readable safetensors file"),
        "json": (b'{"model": {}}', "not a readable safetensors file"),
        "flipped": (bytes(flipped), "is damaged"),
    }
    for name, (data, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(run, folder)
        (folder / "best.safetensors").write_bytes(data)
        refused(cli("sample", folder / "best.safetensors"), message)
        refused(cli("sample", folder, "--device", "auto"), message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": 100000}, "config is invalid: --layers must be at most 10,000"),
        ({"layers": 3}, "lacks the weight"),
        ({"vocab_size": 10**9}, "do not fit its model config"),
        ({"layers": "2"}, "config is invalid"),
        ({"model": "lstm"}, "lacks the weight"),
        ({"pos": "learned"}, "lacks the weight"),
    ],
)
def test_checkpoint_configs_refused(
    run: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    copy = tmp_path / "c"
    shutil.copytree(run, copy)
    _edit_config(copy / "best.safetensors", **changes)
    refused(cli("sample", copy), message)


def test_checkpoint_config_of_a_window_samples(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "w"
    shutil.copytree(run, copy)
    _edit_config(copy / "best.safetensors", window=5, window_pattern="S")
    config = json.loads((copy / "config.json").read_text())
    config["config"]["layers"] = 100000  # sample never reads config.json
    (copy / "config.json").write_text(json.dumps(config))
    assert cli("sample", copy, "--max-new-tokens", "5").code == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--models", "transformer"], "needs at least two different models"),
        (["--models", "lstm,lstm"], "needs at least two different models"),
        (["--models", "lstm,gru"], "--match params sizes the recurrent models"),
        (["--eval-points", "0"], "--eval-points must be at least 1"),
        (["--budget", "0"], "too small to evaluate even once"),
        (["--budget", "abc"], "--budget must look like"),
        (["--budget", "1m", "--steps", "3"], "give one budget"),
        (["--match", "nonsense"], "--match must be params or time"),
        (["--preset", "nonsense"], "unknown --preset 'nonsense'"),
    ],
)
def test_compare_rnn_refusals(tok: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    refused(cli("compare-rnn", tok, *flags, "--out", tmp_path / "c"), message)
    assert not (tmp_path / "c").exists()


def test_compare_rnn_reuses_and_refuses_other_settings(tok: Path, tmp_path: Path) -> None:
    args = ["compare-rnn", tok, "--eval-points", "1", "--sample-tokens", "5", "--threads", "1",
            "--out", tmp_path / "s1", "--quiet"]  # fmt: skip
    assert cli(*args, "--steps", "1").code == 0
    before = snapshot(tmp_path / "s1" / "transformer")
    ran = cli(*[a for a in args if a != "--quiet"], "--steps", "1")
    assert ran.code == 0 and ran.err.count("reusing the finished run") == 2
    assert snapshot(tmp_path / "s1" / "transformer") == before
    refused(cli(*args, "--steps", "2"), "holds a comparison with other settings: steps 1 → 2")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--sample-tokens", "0"], "--sample-tokens must be at least 1"),
        (["--suite", "nonsense"], "unknown suite 'nonsense'"),
        (["--suite", ","], "unknown suite"),
        (["--preset", "nonsense"], "unknown model 'nonsense'"),
        (["--preset", ","], "unknown model"),
        (["--corpus", "nope.txt"], "--corpus: no such file"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
    ],
)
def test_bench_refusals(flags: list[str], message: str) -> None:
    refused(cli("bench", *flags), message)


def test_usage_errors_exit_2() -> None:
    assert cli().code == 2
    ran = cli("trian")
    assert ran.code == 2 and "Did you mean 'train'?" in ran.err
    assert cli("train", "--layers", "two").code == 2
    assert cli("sample").code == 2
    assert proc("--version").code == 0


_EVIL = """
import os, pickle, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[2]}",))
torch.save({"x": Evil()}, sys.argv[1] + "/zip.pt")
open(sys.argv[1] + "/raw.pt", "wb").write(pickle.dumps(Evil()))
torch.save({"x": Evil()}, sys.argv[1] + "/legacy.pt", _use_new_zipfile_serialization=False)
"""


def test_crafted_pickles_never_run(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil"
    evil.mkdir()
    subprocess.run([sys.executable, "-c", _EVIL, str(evil), str(marker)], check=True)
    for name in ("zip.pt", "raw.pt", "legacy.pt"):
        folder = tmp_path / f"run-{name}"
        shutil.copytree(run, folder)
        for weights in folder.glob("*.safetensors"):  # a run as lmcli 0.1 left it
            weights.unlink()
        shutil.copy(evil / name, folder / "best.pt")
        shutil.copy(evil / name, folder / "last.pt")
        assert cli("sample", folder).code == 1
        assert cli("sample", folder, "--device", "auto").code == 1
        refused(cli("train", "--resume", folder), "")
    assert not marker.exists()


def test_a_stale_cached_c_engine_is_rebuilt(run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LMCLI_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "lmcli", "sample", str(run), "--max-new-tokens", "5"]
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    (library,) = tmp_path.glob("decode-*.so")
    library.write_bytes(b"")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "(C)" in done.stderr


def test_stream_sigint_exits_130(run: Path) -> None:
    job = subprocess.Popen([sys.executable, "-m", "lmcli", "sample", str(run), "--stream",
                            "--max-new-tokens", "1000000"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    assert job.stdout is not None
    job.stdout.read(1000)
    time.sleep(0.2)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130 and b"interrupted" in err and b"Traceback" not in err


def test_save_checkpoint_round_trip_still_works(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ok.pt", {"step": 1, "w": torch.ones(3)})
    from lmcli.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 1
