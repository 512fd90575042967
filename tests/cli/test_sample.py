"""`lmcli sample` end to end on tiny trained runs: output, streaming, and every bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli.cli import app

TINY_FLAGS = [
    "--layers", "2", "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
    "--eval-every", "3", "--max-steps", "6", "--threads", "1", "--quiet",
]  # fmt: skip
MULTIBYTE = "Où est l'été ? Ça coûte 5 € — 日本語のテキスト 😀🎭, ẞ, ŋ, Ω.\n"


def sample(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["sample", *args])
    return result.exit_code, result.stdout, result.stderr


def train(text: Path, out: Path, *flags: str) -> Path:
    result = CliRunner().invoke(app, ["train", str(text), *TINY_FLAGS, *flags, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def char_run(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("char")
    (root / "small.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    return train(root / "small.txt", root / "run")


@pytest.fixture(scope="module")
def bpe_run(shakespeare_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Byte-level BPE on text with many multi-byte characters: its tokens often split one."""
    root = tmp_path_factory.mktemp("bpe")
    lines = shakespeare_text[:20_000].splitlines(keepends=True)
    text = "".join(line + (MULTIBYTE if i % 3 == 0 else "") for i, line in enumerate(lines))
    (root / "mixed.txt").write_text(text, encoding="utf-8")
    return train(root / "mixed.txt", root / "run", "--tokenizer", "bpe", "--vocab-size", "300")


def test_samples_go_to_stdout_and_a_seed_repeats_them(char_run: Path) -> None:
    code, out, err = sample(str(char_run), "--max-new-tokens", "40", "--prompt", "ROMEO:")
    assert code == 0, err
    assert out.startswith("ROMEO:") and len(out) >= len("ROMEO:") + 40
    assert f"{char_run}/best.safetensors (step 6," in err and "tokens/s" in err
    assert sample(str(char_run), "--max-new-tokens", "40", "--prompt", "ROMEO:")[1] == out
    assert (
        sample(str(char_run), "--max-new-tokens", "40", "--prompt", "ROMEO:", "--seed", "2")[1]
        != out
    )


def test_json_is_one_object_with_the_samples_and_settings(char_run: Path) -> None:
    code, out, err = sample(
        str(char_run / "last.safetensors"), "--max-new-tokens", "25", "--num-samples", "3",
        "--json", "--top-p", "0.9", "--context-window", "8",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert len(result["samples"]) == 3 and all(len(s) == 25 for s in result["samples"])
    assert result["prompt"] == "\n" and result["tokens"] == 75
    assert result["settings"] == {
        "max_new_tokens": 25, "temperature": 0.8, "top_k": 200, "top_p": 0.9,
        "context_window": 8, "num_samples": 3, "seed": 1337, "device": "cpu", "threads": 1,
        "dropped_from_prompt": [], "repetition_penalty": 1.0, "stop_at_eot": False, "stop": [],
    }  # fmt: skip
    assert result["tokens_per_sample"] == [25, 25, 25] and result["stopped"] == [False] * 3
    assert result["checkpoint"].endswith("last.safetensors") and result["step"] == 6
    assert result["engine"] == "C"  # CI has a C compiler
    assert result["tokens_per_s"] > 0 and 0 < result["time_to_first_token_s"] <= result["seconds"]


def test_several_samples_are_separated_and_greedy_samples_agree(char_run: Path) -> None:
    code, out, err = sample(
        str(char_run), "--num-samples", "2", "--temperature", "0", "--max-new-tokens", "30"
    )
    assert code == 0, err
    assert out.startswith("--- sample 1 of 2 ---\n")
    first, second = out.split("--- sample 2 of 2 ---\n")
    assert first.removeprefix("--- sample 1 of 2 ---\n") == second  # greedy: the same text


@pytest.mark.parametrize("run", ["char_run", "bpe_run"])
def test_streaming_shows_the_same_text_as_the_final_output(
    run: str, request: pytest.FixtureRequest
) -> None:
    path = str(request.getfixturevalue(run))
    prompt = "Où est" if run == "bpe_run" else "ROMEO:"
    for samples in ("1", "2"):
        args = [path, "--prompt", prompt, "--max-new-tokens", "120", "--num-samples", samples]
        code, streamed, err = sample(*args, "--stream", "--temperature", "1.5")
        assert code == 0, err
        assert streamed == sample(*args, "--no-stream", "--temperature", "1.5")[1]


def test_prompt_file_and_drop_unknown(char_run: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Ωmega to thée", encoding="utf-8")
    code, out, err = sample(str(char_run), "--prompt-file", str(prompt), "--drop-unknown",
                            "--max-new-tokens", "5")  # fmt: skip
    assert code == 0, err
    assert out.startswith("mega to the")
    assert "dropped from the prompt: 'é', 'Ω'" in err


BAD_INPUTS = [
    (["--temperature", "-1"], "--temperature must be at least 0 (got -1.0)"),
    (["--top-p", "0"], "--top-p must be in (0, 1] (got 0.0)"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1] (got 1.5)"),
    (["--top-k", "0"], "--top-k must be at least 1 (got 0)"),
    (["--context-window", "17"], "--context-window 17 is larger than the model's context (16"),
    (["--context-window", "0"], "--context-window must be at least 1"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "Ωmega thée"], "characters not in the char vocabulary: 'é', 'Ω'"),
    (["--drop-unknown", "--prompt", "Ω"], "every character of the prompt was dropped"),
    (["--prompt", "x", "--prompt-file", "p.txt"], "give --prompt or --prompt-file, not both"),
    (["--prompt-file", "missing.txt"], "no such prompt file: missing.txt"),
    (["--prompt-file", "."], "is a directory, not a text file"),
    (["--prompt-file", "/dev/zero"], "is not a regular file (a device)"),
    (["--stream", "--json"], "--stream and --json cannot be combined"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--num-samples", "0"], "--num-samples must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_settings_are_one_line_errors(char_run: Path, args: list[str], message: str) -> None:
    code, out, err = sample(str(char_run), *args)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in out + err and out == ""


def test_no_cuda_is_a_one_line_error(char_run: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = sample(str(char_run), "--device", "cuda")
    assert code == 1 and "error: --device cuda: CUDA is not available" in err


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_bad_checkpoints_are_one_line_errors(char_run: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.safetensors"
    data = (char_run / "best.safetensors").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps({"schema_version": 1, "x": Exploit(tmp_path / "pwned")}))
    cases = {
        tmp_path / "missing": "no such run directory or weights file",
        tmp_path: "holds no weights (best.safetensors or last.safetensors)",
        truncated: "is not a readable safetensors file",
        foreign: "is not an lmcli checkpoint of schema 1",
        crafted: "(truncated or foreign",
    }
    for path, message in cases.items():
        code, out, err = sample(str(path))
        assert code == 1, path
        assert err.startswith("error: ") and message in err, err
        assert "Traceback" not in out + err
    assert not (tmp_path / "pwned").exists()


def test_the_command_list_shows_sample() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Generate text from a trained model." in result.stdout


def test_sample_help_imports_neither_torch_nor_the_other_commands() -> None:
    code = (
        "import sys\n"
        "from lmcli.cli import app\n"
        "try:\n"
        "    app(['sample', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'torch', 'lmcli.cli.train', 'lmcli.cli.tokenize', 'lmcli.corpus.prepare'}\n"
        "print('loaded:', sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--context-window" in out.stdout
    assert "loaded: []" in out.stdout


@pytest.mark.gpu
def test_a_run_trained_on_cuda_samples_on_the_cpu(shakespeare_text: str, tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    run = train(tmp_path / "small.txt", tmp_path / "run", "--device", "cuda", "--no-compile")
    code, out, err = sample(str(run), "--device", "cpu", "--max-new-tokens", "20", "--json")
    assert code == 0, err
    assert json.loads(out)["settings"]["device"] == "cpu"
    on_gpu = sample(str(run), "--device", "cuda", "--max-new-tokens", "20", "--json")
    assert on_gpu[0] == 0, on_gpu[2]
