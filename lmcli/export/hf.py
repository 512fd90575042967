"""A Hugging Face transformers folder: config.json, model.safetensors, the tokenizer files.

Written with safetensors and json alone (transformers is needed only to verify). The conventions
that silently break an export when missed are each written out here:
- GPT-2's Conv1D layers store their weights transposed (in, out), unlike nn.Linear (out, in);
- GPT-2's default activation is the tanh GELU: lmcli's exact (erf) GELU is "gelu";
- norm epsilons are written (lmcli: 1e-5 for both norms; HF's RMSNorm default is 1e-6);
- tie_word_embeddings is written either way (GPT-2's default is True, Llama's False);
- bos and eos ids lie inside the vocabulary (<|endoftext|>, or none); model_max_length is the
  context;
- RoPE: lmcli turns channel pairs (i, i + D/2), as HF's rotate_half does, so q and k rows are
  copied unchanged (tests/export fail if either side ever changes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.config import ModelConfig
from lmcli.export.targets import Target
from lmcli.export.tokenizer import hf_tokenizer_files
from lmcli.models.transformer import ROPE_BASE
from lmcli.weights import Weights, mlp_hidden

EPS = 1e-5  # lmcli's LayerNorm (torch's default) and RMSNorm eps
Arrays = dict[str, np.ndarray]


def write_hf(weights: Weights, tokenizer: Any, target: Target, out: Path) -> None:
    """config.json, generation_config.json, model.safetensors and the tokenizer into `out`."""
    from safetensors.numpy import save_file

    cfg = weights.config
    # <|endoftext|> when the vocabulary has it; else none (a char model's id 0 is usually "\n":
    # as eos, generation would stop at the first line).
    eot = tokenizer.eot_id
    special = {"bos_token_id": eot, "eos_token_id": eot}
    config = _config(cfg, target.architecture) | special
    tensors = _tensors(cfg, weights.arrays, target.architecture)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {"do_sample": True, "temperature": 0.8, "top_k": 200, **special,
                  "pad_token_id": eot if eot is not None else 0}  # fmt: skip
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    contiguous = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    save_file(contiguous, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, content in hf_tokenizer_files(tokenizer, cfg.context).items():
        (out / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n",
                                encoding="utf-8")  # fmt: skip


def _config(cfg: ModelConfig, arch: str) -> dict[str, Any]:
    C, D = cfg.width, cfg.width // cfg.heads
    common = {"architectures": [arch], "vocab_size": cfg.vocab_size,
              "tie_word_embeddings": cfg.tie, "torch_dtype": "float32", "dtype": "float32",
              "use_cache": True}  # fmt: skip
    if arch == "GPT2LMHeadModel":
        return common | {
            "model_type": "gpt2", "n_embd": C, "n_layer": cfg.layers, "n_head": cfg.heads,
            "n_positions": cfg.context, "n_ctx": cfg.context, "n_inner": 4 * C,
            "activation_function": "gelu" if cfg.mlp == "gelu" else "relu2",
            "layer_norm_epsilon": EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "scale_attn_weights": True, "reorder_and_upcast_attn": False,
            "scale_attn_by_inverse_layer_idx": False,
        }  # fmt: skip
    llama_like = common | {
        "hidden_size": C, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": D,
        "intermediate_size": mlp_hidden(cfg), "max_position_embeddings": cfg.context,
        "rms_norm_eps": EPS, "rope_theta": ROPE_BASE,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE},
        "attention_dropout": 0.0, "initializer_range": 0.02,
    }  # fmt: skip
    if arch == "LlamaForCausalLM":
        return llama_like | {"model_type": "llama", "hidden_act": "silu", "pretraining_tp": 1,
                             "attention_bias": cfg.bias, "mlp_bias": cfg.bias}  # fmt: skip
    if arch == "ArceeForCausalLM":
        return llama_like | {"model_type": "arcee", "hidden_act": cfg.mlp,
                             "attention_bias": cfg.bias, "mlp_bias": cfg.bias}  # fmt: skip
    assert arch == "MinistralForCausalLM", arch
    kinds = ["sliding_attention" if w is not None else "full_attention"
             for w in cfg.layer_windows()]  # fmt: skip
    return llama_like | {"model_type": "ministral", "hidden_act": "silu",
                         "sliding_window": cfg.window, "layer_types": kinds}  # fmt: skip


def _tensors(cfg: ModelConfig, w: Arrays, arch: str) -> Arrays:
    if arch == "GPT2LMHeadModel":
        return _gpt2(cfg, w)
    C, D, K = cfg.width, cfg.width // cfg.heads, cfg.n_kv_heads
    hidden = mlp_hidden(cfg)
    out: Arrays = {
        "model.embed_tokens.weight": w["wte.weight"],
        "model.norm.weight": w["norm.weight"],
    }
    if not cfg.tie:
        out["lm_head.weight"] = w["head.weight"]
    for i in range(cfg.layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = w[src + "norm1.weight"]
        out[dst + "post_attention_layernorm.weight"] = w[src + "norm2.weight"]
        split = {"q_proj": (0, C), "k_proj": (C, C + K * D), "v_proj": (C + K * D, C + 2 * K * D)}
        for name, (a, b) in split.items():
            out[f"{dst}self_attn.{name}.weight"] = w[src + "attn.qkv.weight"][a:b]
            if cfg.bias:
                out[f"{dst}self_attn.{name}.bias"] = w[src + "attn.qkv.bias"][a:b]
        _linear(out, dst + "self_attn.o_proj", w, src + "attn.proj", cfg.bias)
        fc = w[src + "mlp.fc.weight"]
        if cfg.mlp == "swiglu":  # lmcli's fc is [gate; up]: its first half is the gate
            out[dst + "mlp.gate_proj.weight"], out[dst + "mlp.up_proj.weight"] = (
                fc[:hidden],
                fc[hidden:],
            )
            if cfg.bias:
                fb = w[src + "mlp.fc.bias"]
                out[dst + "mlp.gate_proj.bias"], out[dst + "mlp.up_proj.bias"] = (
                    fb[:hidden],
                    fb[hidden:],
                )
        else:
            _linear(out, dst + "mlp.up_proj", w, src + "mlp.fc", cfg.bias)
        _linear(out, dst + "mlp.down_proj", w, src + "mlp.proj", cfg.bias)
    return out


def _linear(out: Arrays, dst: str, w: Arrays, src: str, bias: bool) -> None:
    out[dst + ".weight"] = w[src + ".weight"]
    if bias:
        out[dst + ".bias"] = w[src + ".bias"]


def _gpt2(cfg: ModelConfig, w: Arrays) -> Arrays:
    """GPT-2's names, its Conv1D weights transposed, and zeros for the biases lmcli lacks."""
    C, D, H, K = cfg.width, cfg.width // cfg.heads, cfg.heads, cfg.n_kv_heads

    def bias(name: str, size: int) -> np.ndarray:
        return w[name] if name in w else np.zeros(size, np.float32)

    if cfg.pos == "learned":
        wpe = w["wpe.weight"]
    elif cfg.pos == "sinusoidal":
        from lmcli.models.transformer import sinusoidal_table

        wpe = sinusoidal_table(cfg.context, C).numpy()
    else:
        wpe = np.zeros((cfg.context, C), np.float32)
    out: Arrays = {"transformer.wte.weight": w["wte.weight"], "transformer.wpe.weight": wpe,
                   "transformer.ln_f.weight": w["norm.weight"],
                   "transformer.ln_f.bias": bias("norm.bias", C)}  # fmt: skip
    if not cfg.tie:
        out["lm_head.weight"] = w["head.weight"]
    # Query head h reads key/value head h // (H / K): GPT-2 gets one copy per query head.
    heads = np.arange(H) // (H // K)
    for i in range(cfg.layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        qkv, qkv_b = w[src + "attn.qkv.weight"], bias(src + "attn.qkv.bias", C + 2 * K * D)
        q, k, v = np.split(qkv, [C, C + K * D])
        qb, kb, vb = np.split(qkv_b, [C, C + K * D])
        k = k.reshape(K, D, C)[heads].reshape(C, C)
        v = v.reshape(K, D, C)[heads].reshape(C, C)
        kb, vb = kb.reshape(K, D)[heads].reshape(C), vb.reshape(K, D)[heads].reshape(C)
        out[dst + "attn.c_attn.weight"] = np.concatenate([q, k, v]).T
        out[dst + "attn.c_attn.bias"] = np.concatenate([qb, kb, vb])
        out[dst + "attn.c_proj.weight"] = w[src + "attn.proj.weight"].T
        out[dst + "attn.c_proj.bias"] = bias(src + "attn.proj.bias", C)
        out[dst + "mlp.c_fc.weight"] = w[src + "mlp.fc.weight"].T
        out[dst + "mlp.c_fc.bias"] = bias(src + "mlp.fc.bias", 4 * C)
        out[dst + "mlp.c_proj.weight"] = w[src + "mlp.proj.weight"].T
        out[dst + "mlp.c_proj.bias"] = bias(src + "mlp.proj.bias", C)
        for n, m in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{dst}{m}.weight"] = w[f"{src}{n}.weight"]
            out[f"{dst}{m}.bias"] = bias(f"{src}{n}.bias", C)
    return out
