"""`lmcli export`: every architecture lmcli can export, loaded by its real consumer
(transformers, llama.cpp through llama-cpp-python) and held to lmcli's own logits, tokenizer and
greedy text; every one it cannot, refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.config import ExportConfig, ModelConfig
from lmcli.errors import ConfigError
from lmcli.export import export_run
from lmcli.export.targets import choose_target
from lmcli.models import build_model
from lmcli.presets import PRESETS, build_configs
from lmcli.tokenizers import CharTokenizer, save_tokenizer
from lmcli.weights import save_weights
from tests.variants import VARIANTS

pytest.importorskip("transformers", reason="the export extra: pip install 'lmcli[export]'")

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPRSTUWYabcdefghiklmnoprstuwy"
T = ModelConfig(vocab_size=len(CHARS), layers=2, width=32, heads=4, context=16)
HF_EXPORTS = {
    "arcee (the default's knobs)": (T, "ArceeForCausalLM"),
    "arcee relu2 GQA bias untied": (
        replace(T, mlp="relu2", kv_heads=2, bias=True, tie=False),
        "ArceeForCausalLM",
    ),
    "llama swiglu MQA": (replace(T, mlp="swiglu", kv_heads=1), "LlamaForCausalLM"),
    "llama swiglu bias untied": (
        replace(T, mlp="swiglu", bias=True, tie=False),
        "LlamaForCausalLM",
    ),
    "ministral sliding windows": (
        replace(T, mlp="swiglu", window=5, window_pattern="SL"),
        "MinistralForCausalLM",
    ),
    "gpt2 (nanoGPT's knobs)": (
        replace(T, pos="learned", norm="layernorm", bias=True),
        "GPT2LMHeadModel",
    ),
    "gpt2 sinusoidal relu2 GQA untied no bias": (
        replace(T, pos="sinusoidal", norm="layernorm", mlp="relu2", kv_heads=2, tie=False),
        "GPT2LMHeadModel",
    ),
    "gpt2 no positions": (replace(T, pos="none", norm="layernorm"), "GPT2LMHeadModel"),
}
GGUF_EXPORTS = {
    "llama swiglu GQA": (replace(T, mlp="swiglu", kv_heads=2), "llama"),
    "llama swiglu bias untied": (replace(T, mlp="swiglu", bias=True, tie=False), "llama"),
    "arcee relu2 MQA": (replace(T, mlp="relu2", kv_heads=1), "arcee"),
}
REFUSED = {
    ("hf", "grouped-query-learned-layernorm-post-bias"): "--norm-placement post",
    ("hf", "sinusoidal-swiglu"): "--pos sinusoidal with --norm rmsnorm",
    ("hf", "rope-layernorm-bias"): "--pos rope with --norm layernorm",
    ("hf", "sliding-window-layers"): "--window with --mlp gelu",
    ("hf", "no-positions-relu2-multi-query-untied"): "--pos none with --norm rmsnorm",
    ("hf", "lstm"): "an LSTM has no architecture",
    ("gguf", "rope-rmsnorm-gelu"): "cannot export --mlp gelu to GGUF",
    ("gguf", "learned-layernorm-gelu-bias-tied (nanoGPT)"): "--pos learned --norm layernorm",
    ("gguf", "rmsnorm-post-swiglu-window-all-local"): "--norm-placement post",
    ("gguf", "gru-untied-embedding"): "a GRU has no architecture",
}


def fake_run(cfg: ModelConfig, folder: Path, seed: int = 0, tokenizer: object = None) -> Path:
    """A run folder of random weights: every parameter drawn, norm gains and biases included,
    so that a tensor exported to the wrong place shows in the logits."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    folder.mkdir(parents=True)
    save_weights(folder / "best.safetensors", model.state_dict(), cfg, step=1)
    save_tokenizer(tokenizer or CharTokenizer(CHARS), folder)
    return folder


@pytest.mark.parametrize("name", list(HF_EXPORTS))
def test_hf_exports_compute_what_lmcli_does(name: str, tmp_path: Path) -> None:
    cfg, arch = HF_EXPORTS[name]
    run = fake_run(cfg, tmp_path / "run")
    result = export_run(ExportConfig(run=run, out=tmp_path / "hf"))
    assert result.architecture == arch
    v = result.verification
    assert v is not None and v["ok"], v
    assert v["max_logit_diff"] < 1e-5 and v["tokens_match"] and v["greedy_match"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["tie_word_embeddings"] is cfg.tie  # written either way
    assert not list(tmp_path.glob(".hf.*"))  # no temporary left


@pytest.mark.llamacpp
@pytest.mark.parametrize("name", list(GGUF_EXPORTS))
def test_gguf_exports_run_in_llama_cpp(name: str, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python: pip install 'lmcli[export]'")
    cfg, arch = GGUF_EXPORTS[name]
    run = fake_run(cfg, tmp_path / "run")
    result = export_run(ExportConfig(run=run, format="gguf", out=tmp_path / "m.gguf"))
    assert result.architecture == arch
    v = result.verification
    assert v is not None and v["ok"], v
    assert v["tokens_match"] and v["greedy_match"] and v["max_logit_diff"] < 1e-4


@pytest.mark.parametrize(("fmt", "variant"), list(REFUSED))
def test_what_a_format_cannot_express_is_refused(fmt: str, variant: str) -> None:
    with pytest.raises(ConfigError) as info:
        choose_target(VARIANTS[variant], fmt)
    assert REFUSED[(fmt, variant)] in info.value.message
    assert info.value.hint and "lmcli train" in info.value.hint


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_exports_to_transformers(preset: str, tmp_path: Path) -> None:
    """Each preset's architecture (gpt2-small and small at 2 layers, to keep the test small:
    the mapping depends on the knobs, not the size)."""
    record = dict(PRESETS[preset])
    if preset in ("gpt2-small", "small"):
        record["layers"] = 2
    cfg, _ = build_configs(record, vocab_size=len(CHARS))
    result = export_run(ExportConfig(run=fake_run(cfg, tmp_path / "run"), out=tmp_path / "hf"))
    assert result.verification is not None and result.verification["ok"]


def test_bpe_with_end_of_text_exports_to_both(shakespeare_text: str, tmp_path: Path) -> None:
    from lmcli.tokenizers.bpe import train_bpe

    bpe = train_bpe([shakespeare_text[:200_000]], 400, ["<|endoftext|>"])
    cfg = replace(T, vocab_size=400, mlp="swiglu", kv_heads=2)
    run = fake_run(cfg, tmp_path / "run", tokenizer=bpe)
    hf = export_run(ExportConfig(run=run, out=tmp_path / "hf"))
    assert hf.verification is not None and hf.verification["tokens_match"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == 399
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Where is\n\n  the   king?\r\n😀 <|endoftext|>"
    assert tokenizer(text)["input_ids"] == [int(i) for i in bpe.encode(text)]
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    pytest.importorskip("llama_cpp", reason="llama-cpp-python: pip install 'lmcli[export]'")
    gguf = export_run(ExportConfig(run=run, format="gguf", out=tmp_path / "m.gguf"))
    assert gguf.verification is not None and gguf.verification["ok"]


def test_lmclis_rotary_layout_is_hfs() -> None:
    """lmcli turns channel pairs (i, i + D/2), as HF Llama's rotate_half: q and k rows are
    copied unchanged. If either side changes, this fails (and so do the exports above)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from lmcli.models.transformer import apply_rotary, rotary_tables

    cos, sin = rotary_tables(16, 8)  # (T, D/2)
    q, k = torch.randn(2, 3, 16, 8), torch.randn(2, 3, 16, 8)
    hf_cos, hf_sin = torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]
    hq, hk = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert torch.allclose(apply_rotary(q, cos, sin), hq, atol=1e-6)
    assert torch.allclose(apply_rotary(k, cos, sin), hk, atol=1e-6)


def test_a_pipeline_generates_from_the_folder(tmp_path: Path) -> None:
    import transformers

    run = fake_run(T, tmp_path / "run")
    export_run(ExportConfig(run=run, out=tmp_path / "hf"))
    generate = transformers.pipeline("text-generation", model=str(tmp_path / "hf"))
    text = generate("ROMEO:", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 8


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["export", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_the_command_writes_verifies_and_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fake_run(T, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(run)
    assert code == 0, err
    assert "ArceeForCausalLM" in out and "identical" in out
    folder = tmp_path / "exports" / "run-hf"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip
    code, _, err = cli(run)
    assert code == 1 and "exists" in err and "--force" in err
    code, out, err = cli(run, "--force", "--json")
    assert code == 0 and json.loads(out)["verification"]["ok"]
    (folder / "notes.txt").write_text("mine")
    code, _, err = cli(run, "--force")
    assert code == 1 and "holds other files" in err and (folder / "notes.txt").exists()
    code, out, err = cli(run, "--no-verify", "--out", tmp_path / "quick", "--json")
    assert code == 0 and json.loads(out)["verification"] is None
    code, _, err = cli(run, "--format", "gguf")
    assert code == 1 and "cannot export --mlp gelu to GGUF" in err and "--mlp swiglu" in err
    code, _, err = cli(tmp_path / "nowhere")
    assert code == 1 and "no such run directory or weights file" in err
    lstm = fake_run(ModelConfig(model="lstm", vocab_size=len(CHARS), layers=1, width=16),
                    tmp_path / "lstm")  # fmt: skip
    code, _, err = cli(lstm)
    assert code == 1 and "an LSTM has no architecture" in err


def test_a_mismatch_is_an_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmcli.export import hf

    original = hf._tensors

    def wrong(cfg: ModelConfig, w: dict, arch: str) -> dict:
        out = original(cfg, w, arch)
        out["model.layers.0.self_attn.q_proj.weight"] = out[
            "model.layers.0.self_attn.k_proj.weight"
        ]
        return out

    monkeypatch.setattr(hf, "_tensors", wrong)
    code, _, err = cli(fake_run(T, tmp_path / "run"), "--out", tmp_path / "hf")
    assert code == 1 and "does not compute what lmcli does" in err and "logits differ" in err
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf.*"))


def test_without_the_consumer_the_export_is_written_unverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    code, out, err = cli(fake_run(T, tmp_path / "run"), "--out", tmp_path / "hf", "--json")
    assert code == 0, err
    assert "not verified: transformers is not installed: pip install 'lmcli[export]'" in err
    assert json.loads(out)["verification"] is None and (tmp_path / "hf" / "config.json").exists()
    np.testing.assert_equal(len(json.loads(out)["files"]), 5)


def test_gguf_without_its_writer_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gguf", None)
    run = fake_run(replace(T, mlp="swiglu"), tmp_path / "run")
    code, out, err = cli(run, "--format", "gguf", "--out", tmp_path / "m.gguf")
    assert code == 1 and out == ""
    assert "writing GGUF needs the gguf package" in err and "lmcli[export]" in err
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".m.gguf.*"))
