"""Which outside architecture computes exactly what an lmcli model computes, or why none does.

Hugging Face transformers (the nearest exact architecture):

| lmcli                                                   | transformers      |
|---------------------------------------------------------|-------------------|
| learned / sinusoidal / no positions, LayerNorm, GELU or  | GPT2LMHeadModel   |
| relu² (sinusoidal: the fixed table as `wpe`; none: zeros)|                   |
| RoPE, RMSNorm, SwiGLU (MHA, GQA, MQA)                   | LlamaForCausalLM  |
| RoPE, RMSNorm, SwiGLU, sliding-window layers, no biases | MinistralForCausalLM |
| RoPE, RMSNorm, GELU or relu² (no gate)                  | ArceeForCausalLM  |

llama.cpp (GGUF): the `llama` architecture (RoPE, RMSNorm, SwiGLU, GQA/MQA), and `arcee` for
relu². Everything else is refused in one line that names the setting in the way.

All need pre-norm blocks. GPT-2 always has biases: a bias-free lmcli model exports zeros there
(exactly what no bias computes). (Qwen2 also has windowed layers, but transformers replaces any
qwen2 folder's tokenizer with its own, whose split pattern and NFC normalisation differ.)
"""

from __future__ import annotations

from dataclasses import dataclass

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError

FORMATS = ("hf", "gguf")


@dataclass(frozen=True)
class Target:
    format: str  # "hf" or "gguf"
    architecture: str  # GPT2LMHeadModel, LlamaForCausalLM, ... or llama / arcee for GGUF
    notes: tuple[str, ...] = ()  # what the mapping does that a reader should know


def choose_target(cfg: ModelConfig, fmt: str) -> Target:
    """The architecture `cfg` exports to in `fmt`, or a ConfigError saying what is in the way."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be hf or gguf (got {fmt!r})")
    if cfg.model != "transformer":
        kind = "an LSTM" if cfg.model == "lstm" else "a GRU"
        raise ConfigError(
            f"{kind} has no architecture in transformers or llama.cpp that computes what "
            "lmcli's does",
            hint="export a transformer (any preset: lmcli train --preset quick)",
        )
    if cfg.norm_placement == "post":
        _refuse(fmt, "--norm-placement post", "every target normalises before each block")
    return _hf(cfg) if fmt == "hf" else _gguf(cfg)


def _hf(cfg: ModelConfig) -> Target:
    notes = []
    if cfg.pos != "rope":
        if cfg.norm != "layernorm":
            _refuse("hf", f"--pos {cfg.pos} with --norm rmsnorm",
                    "GPT-2 (absolute positions) uses LayerNorm")  # fmt: skip
        if cfg.mlp == "swiglu":
            _refuse("hf", "--mlp swiglu with absolute positions", "GPT-2's MLP has no gate")
        if cfg.window is not None:
            _refuse("hf", "--window", "GPT-2 has no sliding-window layers")
        if cfg.pos == "sinusoidal":
            notes.append("sinusoidal positions are written as GPT-2's position table")
        if cfg.pos == "none":
            notes.append("no positions: GPT-2's position table is zeros")
        if cfg.n_kv_heads != cfg.heads:
            notes.append("GPT-2 has one key/value head per query head: shared ones are copied")
        return Target("hf", "GPT2LMHeadModel", tuple(notes))
    if cfg.norm != "rmsnorm":
        _refuse("hf", "--pos rope with --norm layernorm", "no exact target with RoPE has it")
    if cfg.mlp == "swiglu":
        if cfg.window is None:
            return Target("hf", "LlamaForCausalLM")
        if cfg.bias:
            _refuse("hf", "--window with --bias", "Ministral (Llama with windows) has no biases")
        return Target("hf", "MinistralForCausalLM", ("sliding-window layers as its layer_types",))
    if cfg.window is not None:
        _refuse("hf", f"--window with --mlp {cfg.mlp}", "Arcee has no sliding-window layers")
    return Target("hf", "ArceeForCausalLM", (f"Arcee: Llama's attention, a {cfg.mlp} MLP",))


def _gguf(cfg: ModelConfig) -> Target:
    if cfg.pos != "rope" or cfg.norm != "rmsnorm":
        _refuse("gguf", f"--pos {cfg.pos} --norm {cfg.norm}",
                "llama.cpp's llama architecture is RoPE and RMSNorm")  # fmt: skip
    if cfg.window is not None:
        _refuse("gguf", "--window", "llama.cpp's llama architecture has no sliding-window layers")
    if cfg.mlp == "gelu":
        _refuse("gguf", "--mlp gelu", "llama.cpp's llama has a SwiGLU MLP and arcee a relu² one")
    return Target("gguf", "llama" if cfg.mlp == "swiglu" else "arcee")


def _refuse(fmt: str, setting: str, why: str) -> None:
    example = "--mlp swiglu (pos rope, norm rmsnorm)" if fmt == "gguf" else "--preset quick"
    raise ConfigError(
        f"cannot export {setting} to {'GGUF' if fmt == 'gguf' else 'transformers'}: {why}",
        hint=f"train a model that exports, e.g. lmcli train {example}",
    )
