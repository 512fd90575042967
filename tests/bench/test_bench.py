"""`lmcli bench`: the CI smoke run (--quick --json), figures and refusals. No timing is asserted."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.bench.measure import Figure, timed
from lmcli.bench.suites import synthetic_text
from lmcli.cli import app
from lmcli.corpus.named import cached_corpus


def test_quick_json_has_every_suite_and_only_positive_finite_figures() -> None:
    result = CliRunner().invoke(app, ["bench", "--quick", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"cpu", "cores", "gpu", "torch"} <= set(data["machine"])
    assert data["settings"]["models"] == ["tiny", "lstm"] and data["settings"]["quick"]
    names = [f["name"] for f in data["figures"]]
    for expected in (
        "BPE merges for vocab 1024", "BPE merges for vocab 4096", "BPE 4096 encode (tiktoken)",
        "char encode", "tiny: tokens/s", "tiny: step time", "tiny: memory of a step",
        "lstm: tokens/s", "tiny: tokens/s with KV cache",
        "tiny: tokens/s without cache (full forward per token)", "tiny: time to first token",
        "lstm: tokens/s carrying the state", "lstm: time to first token",
    ):  # fmt: skip
        assert expected in names, expected
    for f in data["figures"]:
        assert f["suite"] in ("tokenize", "train", "sample") and f["unit"]
        values = [f["median"], f["min"], f["max"], *f["runs"]]
        assert all(math.isfinite(v) and v > 0 for v in values), f
        assert f["min"] <= f["median"] <= f["max"]
    train = next(f for f in data["figures"] if f["name"] == "tiny: tokens/s")
    assert {"params", "device", "dtype", "threads", "batch_size"} <= set(train["settings"])
    assert "synthetic" in train["settings"]["text"]  # no corpus given or cached: nothing fetched


def test_one_suite_and_a_table(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text(synthetic_text(200_000), encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "--suite", "tokenize", "--repeats", "1",
                                      "--corpus", str(text)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "BPE merges for" in result.stdout and "train:" not in result.stdout
    assert "text: t.txt" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "speed"], "--suite: unknown suite 'speed'"),
        (["--preset", "huge"], "--preset: unknown model 'huge'"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--corpus", "no/such.txt"], "--corpus: no such file"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 1 and message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_figure_is_the_median_and_range_of_its_runs() -> None:
    f = Figure("train", "x", "tokens/s", (3.0, 1.0, 2.0, 10.0, 4.0))
    assert (f.median, f.low, f.high) == (3.0, 1.0, 10.0)
    assert f.to_dict()["runs"] == [3.0, 1.0, 2.0, 10.0, 4.0]
    calls: list[int] = []
    seconds = timed(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(seconds) == 3 and len(calls) == 5


def test_synthetic_text_is_deterministic_and_text_shaped() -> None:
    a, b = synthetic_text(20_000), synthetic_text(20_000)
    assert a == b and len(a) == 20_000 and a.count("\n") > 100
    assert synthetic_text(20_000, seed=1) != a


def test_a_cached_corpus_is_found_and_never_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shakespeare_path: Path
) -> None:
    monkeypatch.setenv("LMCLI_DATA_DIR", str(tmp_path))
    assert cached_corpus("shakespeare") is None and not list(tmp_path.iterdir())
    shutil.copyfile(shakespeare_path, tmp_path / "tinyshakespeare.txt")
    assert cached_corpus("shakespeare") == tmp_path / "tinyshakespeare.txt"
    (tmp_path / "tinyshakespeare.txt").write_text("changed")
    assert cached_corpus("shakespeare") is None


def test_model_flops_utilisation_against_the_gpu_peak() -> None:
    from lmcli.bench.suites import model_flops_utilisation

    # GPT-2 small trains at ~6 * 124M FLOPs per token; 500k tokens/s on an H100 (989 TFLOP/s).
    assert model_flops_utilisation(6 * 124_000_000, 500_000, "NVIDIA H100 80GB HBM3") == (
        pytest.approx(100 * 6 * 124e6 * 5e5 / 989e12)
    )
    assert model_flops_utilisation(1000, 1.0, "Some Unknown GPU") is None
