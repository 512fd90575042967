"""`lmcli compare-rnn`: one tiny comparison, its reports, reuse, resume and refusals."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli import rundir
from lmcli.cli import app
from lmcli.compare.run import RESULT_FILE, Comparison, Stage, compare, model_configs, train_flags
from lmcli.config import CompareConfig
from lmcli.errors import LmcliError
from lmcli.presets import PRESETS

STEPS = 8


@pytest.fixture(scope="module")
def text(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compare-text") / "small.txt"
    path.write_text(shakespeare_text[:40_000], encoding="utf-8")
    return path


def settings(text: Path, out: Path, **changes: object) -> CompareConfig:
    cfg = CompareConfig(
        corpus=str(text), models=("transformer", "lstm", "gru"), budget=None, steps=STEPS,
        eval_points=4, sample_tokens=40, threads=1, out=out, prompt="ROMEO:",
    )  # fmt: skip
    return replace(cfg, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def first(
    text: Path, tmp_path_factory: pytest.TempPathFactory, kernel_cache: Path
) -> tuple[CompareConfig, Comparison]:
    cfg = settings(text, tmp_path_factory.mktemp("compare") / "out")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LMCLI_CACHE_DIR", str(kernel_cache))
        return cfg, compare(cfg)


def test_the_report_holds_every_model_matched_and_measured(
    first: tuple[CompareConfig, Comparison],
) -> None:
    _, result = first
    assert [m.name for m in result.models] == ["transformer", "lstm", "gru"]
    context = PRESETS["quick"]["context"]  # the preset sets every model's context and batch
    assert not result.interrupted and result.context == context
    target = result.models[0].params
    for m in result.models:
        assert abs(m.params - target) <= 0.1 * target, (m.name, m.params, target)
        assert m.train["steps"] == STEPS and not m.reused
        for figure in (m.train["tokens_per_s"], m.train["best_val_bpb"], m.generation_tokens_per_s,
                       m.memory["total"], m.memory["activations"]):  # fmt: skip
            assert figure is not None and math.isfinite(figure) and figure > 0, (m.name, figure)
        assert m.memory["cuda_peak"] is None  # a CPU run keeps no allocator peak
        assert len(m.bpb_by_position) == context
        assert all(math.isfinite(v) for v in m.bpb_by_position)
        # Evaluations every 2 steps and at the end, in order of time and tokens.
        assert [p["step"] for p in m.curve] == [2, 4, 6, 8]
        seconds = [p["train_seconds"] for p in m.curve]
        assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)
        assert m.curve[-1]["tokens"] == STEPS * PRESETS["quick"]["batch-size"] * context
        assert len(m.sample) >= 40 and m.config["model"] == m.name
    # One context, batch and seed for all; the recurrent ones at the requested depth.
    for key in ("context", "batch-size", "seed", "max-steps", "optimizer", "lr"):
        assert len({m.config[key] for m in result.models}) == 1, key
    assert [m.config["layers"] for m in result.models[1:]] == [2, 2]


def test_reports_are_written_and_readable(first: tuple[CompareConfig, Comparison]) -> None:
    from lmcli.compare.report import text_curves, write_reports

    _, result = first
    paths = write_reports(result)
    data = json.loads(paths["json"].read_text())
    assert [m["name"] for m in data["models"]] == ["transformer", "lstm", "gru"]
    assert data["settings"]["steps"] == STEPS and data["machine"]["cores"] >= 1
    assert paths["picture"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["picture"].stat().st_size > 10_000
    markdown = paths["markdown"].read_text()
    assert "![learning curves and loss by position](curves.png)" in markdown
    assert "| best val bits/byte |" in markdown and "## Sample: gru" in markdown
    lines = text_curves(result)
    assert any(line.strip().startswith("lstm") and "→" in line for line in lines)


def test_a_second_run_reuses_the_first(first: tuple[CompareConfig, Comparison]) -> None:
    cfg, result = first
    before = {m.name: (cfg.out / m.name / rundir.METRICS).stat().st_mtime_ns for m in result.models}
    events: list[object] = []
    again = compare(replace(cfg, sample_tokens=20), events.append)  # samples may change
    assert all(m.reused for m in again.models)
    assert [m.train for m in again.models] == [m.train for m in result.models]
    for m in again.models:
        assert (cfg.out / m.name / rundir.METRICS).stat().st_mtime_ns == before[m.name]
    assert not any(type(e).__name__ == "Started" for e in events)  # no training began
    assert any(isinstance(e, Stage) and "reusing" in e.message for e in events)


def test_an_interrupted_comparison_resumes(text: Path, tmp_path: Path) -> None:
    cfg = settings(text, tmp_path / "out", models=("transformer", "lstm"), sample_tokens=10)
    seen: list[object] = []
    stopped = compare(cfg, seen.append, should_stop=lambda: len(seen) > 4)
    assert stopped.interrupted and not (tmp_path / "out" / "transformer" / RESULT_FILE).exists()
    events: list[object] = []
    done = compare(cfg, events.append)
    assert not done.interrupted and [m.train["steps"] for m in done.models] == [STEPS, STEPS]
    assert any(isinstance(e, Stage) and "resuming" in e.message for e in events)


def test_match_time_keeps_char_rnn_size(text: Path, tmp_path: Path) -> None:
    cfg = settings(text, tmp_path, match="time", budget=5.0, steps=None)
    configs = model_configs(cfg, train_flags(cfg), vocab_size=65)
    assert configs["lstm"][0].width == configs["gru"][0].width == 128
    assert configs["lstm"][1].max_time == 5.0 and configs["lstm"][1].max_steps is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ("lstm",)}, "at least two different models"),
        ({"models": ("transformer", "rnn")}, "unknown model 'rnn'"),
        ({"steps": 0}, "too small to evaluate even once"),
        ({"budget": 0.0, "steps": None}, "too small to evaluate even once"),
        ({"budget": 5.0}, "give one budget"),
        ({"match": "time"}, "--match time compares equal training times"),
        ({"models": ("lstm", "gru")}, "--match params sizes the recurrent models"),
        ({"preset": "huge"}, "unknown --preset 'huge'"),
        ({"prompt": "ROMEO: ☃"}, "☃"),
    ],
)
def test_bad_settings_are_refused_before_any_training(
    text: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(LmcliError, match=message):
        compare(settings(text, tmp_path / "out", **changes))
    assert not list((tmp_path / "out").glob("*/config.json"))  # no run was started


def test_other_settings_in_the_same_folder_are_refused(
    first: tuple[CompareConfig, Comparison],
) -> None:
    cfg, _ = first
    with pytest.raises(LmcliError, match="holds a comparison with other settings: steps 8"):
        compare(replace(cfg, steps=9))


def test_the_command_prints_a_table_curves_and_samples(text: Path, tmp_path: Path) -> None:
    args = ["compare-rnn", str(text), "--steps", "3", "--eval-points", "3", "--sample-tokens",
            "15", "--threads", "1", "--out", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "lmcli compare-rnn" in out and "best val bits/byte" in out and "lstm" in out
    assert "by position in the window" in out and "--- transformer ---" in out
    assert (tmp_path / "c" / "report.md").is_file() and "reports:" in result.stderr
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.stderr
    data = json.loads(again.stdout)
    assert all(m["reused"] for m in data["models"]) and data["reports"]["picture"].endswith(".png")


def test_a_bad_flag_is_one_line(text: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["compare-rnn", str(text), "--budget", "soon", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "--budget must look like" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
