"""Property-based fuzzing of train, sample, tokenize and compare-rnn: random values and types for
their options, random config files, random damage to the files lmcli reads. Whatever comes in,
every run ends with exit 0, 1, 2 or 130 and no traceback.

A dozen examples per command (tiny models, a handful of steps), and 150 in the tests marked
slow; the same ones every run unless LMCLI_FUZZ_RANDOM=1 asks hypothesis to explore. Sizes are
drawn from both ends only: small ones, and ones so large that lmcli must refuse them before any
work (which is part of what is tested); budgets only from short lists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmcli.presets import KNOWN_KEYS

from .conftest import cli

EXIT_CODES = {0, 1, 2, 130}
# The same examples on every run (CI must not depend on the draw); LMCLI_FUZZ_RANDOM=1 explores.
FAST = settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("LMCLI_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANY = settings(FAST, max_examples=150)
EXAMPLE_SECONDS = 120  # an example that takes longer is a hang, and fails with its arguments

HUGE = st.sampled_from([10**12, 2**64, 10**30])
ints = st.one_of(st.integers(-2, 6), HUGE, st.just(-(10**9)))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1e-310, 1e308, 0.5, 1.0]),
)
words = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "nan", "inf", "-1", "1e309", "abc", "🤖", "0x10", "3m", "1h30m", "1s"]),
)
anything = st.one_of(ints.map(str), floats.map(str), words)


def _option(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda v: [name, v])


# Options that set how long a run takes: their values come from their own (short) lists only,
# since a long run is what a user who asks for one gets (`--max-steps 10^23` trains until killed).
BUDGETS = {"--max-steps", "--max-time", "--grad-accum", "--budget", "--steps"}


def _flags(options: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """A few of the options, each with a value that may be of the wrong type."""

    def value(name: str) -> st.SearchStrategy[str]:
        return options[name] if name in BUDGETS else st.one_of(options[name], anything)

    chosen = st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=4, unique=True)
    return chosen.flatmap(lambda names: st.tuples(*[_option(n, value(n)) for n in names])).map(
        lambda pairs: [x for pair in pairs for x in pair]
    )


def _check(args: list[object]) -> None:
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"lmcli {args} ran for more than {EXAMPLE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(EXAMPLE_SECONDS)
    try:
        ran = cli(*args)  # raises if lmcli let an exception escape
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert ran.code in EXIT_CODES, (args, ran.code, ran.err)
    assert "Traceback" not in ran.err + ran.out, (args, ran.err)


small_ints = st.integers(-1, 4).map(str)
TRAIN_OPTIONS = {
    "--layers": small_ints, "--width": st.sampled_from(["8", "16", "12", "0"]),
    "--heads": small_ints, "--kv-heads": small_ints, "--context": st.sampled_from(["4", "8", "0"]),
    "--pos": st.sampled_from(["learned", "sinusoidal", "rope", "none"]),
    "--norm": st.sampled_from(["layernorm", "rmsnorm"]),
    "--norm-placement": st.sampled_from(["pre", "post"]),
    "--mlp": st.sampled_from(["gelu", "swiglu", "relu2"]), "--window": small_ints,
    "--window-pattern": st.sampled_from(["SL", "S", "L", "x"]), "--dropout": floats.map(str),
    "--embedding": small_ints, "--model": st.sampled_from(["transformer", "lstm", "gru"]),
    "--batch-size": small_ints, "--grad-accum": st.sampled_from(["1", "2", "0", "x"]),
    "--lr": floats.map(str),
    "--warmup": small_ints, "--min-lr-ratio": floats.map(str),
    "--weight-decay": floats.map(str), "--beta1": floats.map(str), "--beta2": floats.map(str),
    "--grad-clip": floats.map(str), "--optimizer": st.sampled_from(["adamw", "muon"]),
    "--muon-lr": floats.map(str), "--max-steps": st.sampled_from(["1", "3", "0", "-1", "x"]),
    "--max-time": st.sampled_from(["0.2s", "0", "abc", "-5s"]), "--eval-every": small_ints,
    "--eval-interval": st.sampled_from(["0.1s", "0s", "x"]), "--log-every": small_ints,
    "--device": st.sampled_from(["cpu", "auto", "meta", "cuda:7", "mps"]),
    "--dtype": st.sampled_from(["auto", "float32", "bfloat16", "float16", "float8"]),
    "--threads": st.sampled_from(["1", "2", "999", "0"]), "--seed": ints.map(str),
    "--preset": st.sampled_from(["quick", "nanogpt-cpu", "nonsense"]),
    "--tokenizer": st.sampled_from(["char", "bpe", "nope"]),
    "--vocab-size": st.sampled_from(["257", "300", "5"]),
}  # fmt: skip
# Always small unless a flag above says otherwise (the last of a repeated option wins: these
# come first).
TRAIN_BASE = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8",
              "--batch-size", "2", "--max-steps", "2", "--eval-every", "2", "--threads", "1",
              "--quiet"]  # fmt: skip


def _out(tmp_path: Path) -> Path:
    """A fresh folder name for each example (hypothesis reuses the test's tmp_path)."""
    for i in range(10**6):
        if not (tmp_path / f"o{i}").exists():
            return tmp_path / f"o{i}"
    raise AssertionError


def _train_fuzz(small: Path, tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    corpus = data.draw(st.sampled_from([tok, small]))
    flags = data.draw(_flags(TRAIN_OPTIONS))
    _check(["train", corpus, *TRAIN_BASE, *flags, "--out", _out(tmp_path)])


@FAST
@given(data=st.data())
def test_train_options(small: Path, tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _train_fuzz(small, tok, tmp_path, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_train_options_many(small: Path, tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _train_fuzz(small, tok, tmp_path, data)


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-3, 5), HUGE, floats, words),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(words, inner, max_size=3)),
    max_leaves=4,
)  # fmt: skip


def _config_fuzz(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    keys = st.one_of(st.sampled_from(sorted(KNOWN_KEYS)), words)
    table = data.draw(st.dictionaries(keys, toml_values, max_size=4))
    kind = data.draw(st.sampled_from(["json", "toml", "bytes"]))
    path = tmp_path / f"c.{'toml' if kind != 'json' else 'json'}"
    if kind == "json":
        path.write_text(json.dumps(table, allow_nan=True))
    elif kind == "toml":
        path.write_text("".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in table.items()))
    else:
        path.write_bytes(data.draw(st.binary(max_size=64)))
    _check(["train", tok, *TRAIN_BASE, "--config", path, "--out", _out(tmp_path)])


@FAST
@given(data=st.data())
def test_config_files(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _config_fuzz(tok, tmp_path, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_config_files_many(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _config_fuzz(tok, tmp_path, data)


SAMPLE_OPTIONS = {
    "--prompt": st.text(max_size=12), "--max-new-tokens": st.one_of(small_ints, HUGE.map(str)),
    "--temperature": floats.map(str), "--top-k": ints.map(str), "--top-p": floats.map(str),
    "--context-window": ints.map(str), "--num-samples": st.one_of(small_ints, HUGE.map(str)),
    "--seed": ints.map(str), "--device": st.sampled_from(["cpu", "auto", "meta", "cuda"]),
    "--threads": st.sampled_from(["1", "999", "0"]), "--prompt-file": words,
}  # fmt: skip
SWITCHES = ["--drop-unknown", "--stream", "--no-stream", "--json"]


def _sample_fuzz(run: Path, data: st.DataObject) -> None:
    flags = data.draw(_flags(SAMPLE_OPTIONS))
    switches = data.draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    _check(["sample", run, "--max-new-tokens", "5", *flags, *switches])


@FAST
@given(data=st.data())
def test_sample_options(run: Path, data: st.DataObject) -> None:
    _sample_fuzz(run, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_sample_options_many(run: Path, data: st.DataObject) -> None:
    _sample_fuzz(run, data)


TOKENIZE_OPTIONS = {
    "--tokenizer": st.sampled_from(["char", "bpe", "nonsense"]),
    "--vocab-size": st.one_of(st.sampled_from(["256", "257", "300", "70000"]), ints.map(str)),
    "--val-fraction": floats.map(str), "--bpe-train-mb": floats.map(str),
    "--threads": st.sampled_from(["1", "2", "0"]),
}  # fmt: skip


def _tokenize_fuzz(small: Path, tmp_path: Path, data: st.DataObject) -> None:
    flags = data.draw(_flags(TOKENIZE_OPTIONS))
    switches = data.draw(st.lists(st.sampled_from(["--force", "--exact", "--json"]), max_size=2,
                                  unique=True))  # fmt: skip
    corpus = data.draw(st.sampled_from([str(small), "shakespeare-not-a-name", str(tmp_path)]))
    _check(["tokenize", corpus, *flags, *switches, "--out", _out(tmp_path)])


@FAST
@given(data=st.data())
def test_tokenize_options(small: Path, tmp_path: Path, data: st.DataObject) -> None:
    _tokenize_fuzz(small, tmp_path, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_tokenize_options_many(small: Path, tmp_path: Path, data: st.DataObject) -> None:
    _tokenize_fuzz(small, tmp_path, data)


COMPARE_OPTIONS = {
    "--budget": st.sampled_from(["0.1s", "0", "abc", "-1s"]),
    "--steps": st.sampled_from(["1", "2", "0", "-1", "x"]),
    "--match": st.sampled_from(["params", "time", "x"]),
    "--models": st.sampled_from(["transformer,lstm", "lstm,gru", "transformer", "x,y", ","]),
    "--preset": st.sampled_from(["quick", "nonsense"]), "--rnn-layers": small_ints,
    "--eval-points": small_ints, "--prompt": st.text(max_size=6),
    "--sample-tokens": small_ints, "--seed": ints.map(str),
    "--device": st.sampled_from(["cpu", "meta"]), "--threads": st.sampled_from(["1", "0"]),
}  # fmt: skip


def _compare_fuzz(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    flags = data.draw(_flags(COMPARE_OPTIONS))
    base = ["--steps", "1", "--eval-points", "1", "--sample-tokens", "3", "--threads", "1",
            "--quiet"]  # fmt: skip
    _check(["compare-rnn", tok, *base, *flags, "--out", _out(tmp_path)])


@FAST
@given(data=st.data())
def test_compare_rnn_options(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _compare_fuzz(tok, tmp_path, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_compare_rnn_options_many(tok: Path, tmp_path: Path, data: st.DataObject) -> None:
    _compare_fuzz(tok, tmp_path, data)


RUN_FILES = ["best.safetensors", "last.safetensors", "last.pt", "config.json", "meta.json",
             "tokenizer.json", "metrics.jsonl"]  # fmt: skip


def _damage_fuzz(run: Path, tmp_path: Path, data: st.DataObject) -> None:
    copy = _out(tmp_path)
    shutil.copytree(run, copy)
    name = data.draw(st.sampled_from(RUN_FILES))
    raw = bytearray((copy / name).read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "replace", "empty"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif how == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    elif how == "replace":
        raw = bytearray(data.draw(st.binary(max_size=200)))
    else:
        raw = bytearray()
    (copy / name).write_bytes(bytes(raw))
    command = data.draw(st.sampled_from([
        ["sample", copy, "--max-new-tokens", "3"],
        ["sample", copy, "--max-new-tokens", "3", "--device", "auto"],
        ["train", "--resume", copy, "--max-steps", "8", "--quiet"],
    ]))  # fmt: skip
    _check(command)


@FAST
@given(data=st.data())
def test_damaged_run_files(run: Path, tmp_path: Path, data: st.DataObject) -> None:
    _damage_fuzz(run, tmp_path, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_damaged_run_files_many(run: Path, tmp_path: Path, data: st.DataObject) -> None:
    _damage_fuzz(run, tmp_path, data)
