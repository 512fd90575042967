"""One .gguf file for llama.cpp, written with the `gguf` package (llama.cpp's own writer).

Architectures: `llama` (RoPE, RMSNorm, SwiGLU; GQA/MQA) and `arcee` (the same with a relu² MLP).
Every tensor is float32, so the file computes what lmcli computes up to llama.cpp's arithmetic.

RoPE: llama.cpp's llama turns adjacent channels (2i, 2i + 1); lmcli and HF turn (i, i + D/2).
llama.cpp's own HF converter reorders each head's q and k rows to go from one to the other, and
lmcli's layout is HF's, so the same permutation applies here (`_rope_rows`).

The tokenizer is byte-level BPE (tokenizer model "gpt2", see tokenizer.py) with the "llama-bpe"
pre-tokenizer: LLaMA 3's split pattern, which splits text exactly as GPT-4's (lmcli's) does (the
two differ only in possessive quantifiers and `[\\r\\n]` vs `[\\r\\n]+` after `\\s*`, which match
the same spans). No BOS is added; eos (and bos, which llama.cpp requires) is `<|endoftext|>` when
the vocabulary has it, else token 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmcli.export.hf import EPS
from lmcli.export.targets import Target
from lmcli.export.tokenizer import gguf_vocabulary
from lmcli.models.transformer import ROPE_BASE
from lmcli.weights import Weights, mlp_hidden


def write_gguf(weights: Weights, tokenizer: Any, target: Target, path: Path, name: str) -> None:
    import gguf

    cfg = weights.config
    C, D, K = cfg.width, cfg.width // cfg.heads, cfg.n_kv_heads
    hidden = mlp_hidden(cfg)
    writer = gguf.GGUFWriter(str(path), target.architecture)
    writer.add_name(name)
    writer.add_block_count(cfg.layers)
    writer.add_context_length(cfg.context)
    writer.add_embedding_length(C)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(cfg.heads)
    writer.add_head_count_kv(K)
    writer.add_rope_dimension_count(D)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types, merges = gguf_vocabulary(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eot = tokenizer.eot_id
    writer.add_bos_token_id(eot if eot is not None else 0)
    writer.add_eos_token_id(eot if eot is not None else 0)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)

    w = weights.arrays

    def add(name: str, array: np.ndarray) -> None:
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    add("token_embd.weight", w["wte.weight"])
    add("output_norm.weight", w["norm.weight"])
    if not cfg.tie:
        add("output.weight", w["head.weight"])
    for i in range(cfg.layers):
        src, dst = f"blocks.{i}.", f"blk.{i}."
        qkv = w[src + "attn.qkv.weight"]
        q, k, v = np.split(qkv, [C, C + K * D])
        add(dst + "attn_norm.weight", w[src + "norm1.weight"])
        add(dst + "attn_q.weight", _rope_rows(q, cfg.heads))
        add(dst + "attn_k.weight", _rope_rows(k, K))
        add(dst + "attn_v.weight", v)
        add(dst + "attn_output.weight", w[src + "attn.proj.weight"])
        add(dst + "ffn_norm.weight", w[src + "norm2.weight"])
        fc = w[src + "mlp.fc.weight"]
        if cfg.mlp == "swiglu":  # lmcli's fc is [gate; up]
            add(dst + "ffn_gate.weight", fc[:hidden])
            add(dst + "ffn_up.weight", fc[hidden:])
        else:
            add(dst + "ffn_up.weight", fc)
        add(dst + "ffn_down.weight", w[src + "mlp.proj.weight"])
        if cfg.bias:
            qb, kb, vb = np.split(w[src + "attn.qkv.bias"], [C, C + K * D])
            add(dst + "attn_q.bias", _rope_rows(qb, cfg.heads))
            add(dst + "attn_k.bias", _rope_rows(kb, K))
            add(dst + "attn_v.bias", vb)
            add(dst + "attn_output.bias", w[src + "attn.proj.bias"])
            fb = w[src + "mlp.fc.bias"]
            if cfg.mlp == "swiglu":
                add(dst + "ffn_gate.bias", fb[:hidden])
                add(dst + "ffn_up.bias", fb[hidden:])
            else:
                add(dst + "ffn_up.bias", fb)
            add(dst + "ffn_down.bias", w[src + "mlp.proj.bias"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rope_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Each head's rows reordered from (i, i + D/2) pairs to adjacent (2i, 2i + 1) ones: llama.cpp's
    convert_hf_to_gguf.py `permute`."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
