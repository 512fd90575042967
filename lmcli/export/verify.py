"""Checking an export with its real consumer: transformers for a folder, llama.cpp (through
llama-cpp-python) for a .gguf file.

Each check loads the export the way a user would, runs it on a fixed batch of the run's
validation text, and compares with lmcli's own torch model: the largest logit difference
(float32), the token ids of a stress string (newlines, tabs, CRLF, runs of spaces, digits, emoji,
accents, CJK and a literal `<|endoftext|>`), and a greedy continuation. A char vocabulary has no
token for a character it never saw: lmcli refuses such text, so the stress string's ids are
compared against lmcli's with those characters left out (`--drop-unknown`), which is what both
consumers do with them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STRESS = ("ROMEO:\nHello, world!\n\n\tTabs and  two  spaces,   three.\r\nA CRLF line\r\n"
          "Digits 1234567, émoji 😀, 日本語, <|endoftext|> and 'quotes' don't.\n")  # fmt: skip
GREEDY_TOKENS = 24
HF_TOLERANCE = 1e-4  # float32 through the same operations: measured ~1e-7
GGUF_TOLERANCE = 1e-4  # relative to the largest logit: llama.cpp's kernels (measured ~1e-6)


@dataclass(frozen=True)
class Verification:
    consumer: str  # "transformers 5.24.0", "llama.cpp (llama-cpp-python 0.3.36)"
    max_logit_diff: float
    tolerance: float
    tokens_match: bool
    greedy_match: bool
    positions: int  # logits compared: batch x positions

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= self.tolerance and self.tokens_match and self.greedy_match

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


class Unverifiable(Exception):
    """The consumer is not installed: the export is written, its check not run."""


def reference(weights: Any, tokenizer: Any, batch: np.ndarray) -> dict[str, Any]:
    """lmcli's side: logits (B, T, V) on the batch, the stress string's ids, a greedy run."""
    import torch

    from lmcli.checkpoints import model_from_weights
    from lmcli.sampling.prompt import encode_prompt

    model = model_from_weights(weights)
    context = weights.config.context
    with torch.no_grad():
        logits = model(torch.from_numpy(batch.astype(np.int64)))[0].numpy()
        prompt = [int(t) for t in batch[0, : max(1, min(8, context // 2))]]
        seq = list(prompt)
        for _ in range(min(GREEDY_TOKENS, context - len(prompt))):  # within the context
            out = model(torch.tensor([seq]))[0][0, -1]
            seq.append(int(out.argmax()))
    ids = [int(i) for i in encode_prompt(tokenizer, STRESS, drop_unknown=True)]
    return {"logits": logits, "stress_ids": ids, "prompt": prompt, "greedy": seq[len(prompt) :]}


def verify_hf(folder: Path, ref: dict[str, Any], batch: np.ndarray) -> Verification:
    try:
        import torch
        import transformers
    except ImportError:
        raise Unverifiable("transformers is not installed") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with _quiet():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32
        ).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        logits = model(torch.from_numpy(batch.astype(np.int64))).logits.numpy()
        prompt = torch.tensor([ref["prompt"]])
        count = len(ref["greedy"])
        # Greedy, and never stopped early at <|endoftext|> (lmcli's greedy run does not stop).
        greedy_cfg = transformers.GenerationConfig(do_sample=False, max_new_tokens=count,
                                                   eos_token_id=None, pad_token_id=0)  # fmt: skip
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                   generation_config=greedy_cfg)  # fmt: skip
    greedy = [int(t) for t in generated[0, len(ref["prompt"]) :]]
    ids = tokenizer(STRESS, add_special_tokens=False)["input_ids"]
    return Verification(
        consumer=f"transformers {transformers.__version__}",
        max_logit_diff=float(np.abs(logits - ref["logits"]).max()),
        tolerance=HF_TOLERANCE,
        tokens_match=list(ids) == ref["stress_ids"],
        greedy_match=greedy == ref["greedy"],
        positions=batch.size,
    )


def verify_gguf(path: Path, ref: dict[str, Any], batch: np.ndarray, context: int) -> Verification:
    try:
        import llama_cpp
    except ImportError:
        raise Unverifiable("llama-cpp-python is not installed") from None
    with _quiet():
        # A float32 KV cache (GGML type 0): llama.cpp's default float16 cache alone moves the
        # logits by ~1e-3 of their size (measured), which would hide what the file holds.
        llm = llama_cpp.Llama(str(path), n_ctx=max(context, 256), n_batch=max(context, 256),
                              logits_all=True, verbose=False, n_threads=1, type_k=0,
                              type_v=0)  # fmt: skip
    diff = 0.0
    for row, expected in zip(batch, ref["logits"], strict=True):
        llm.reset()
        with _quiet():
            llm.eval([int(t) for t in row])
        scores = np.asarray(llm.scores[: len(row)])
        diff = max(diff, float(np.abs(scores - expected).max()))
    seq = list(ref["prompt"])
    llm.reset()
    with _quiet():
        llm.eval(seq)
        for _ in ref["greedy"]:
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            seq.append(token)
            llm.eval([token])
    greedy = seq[len(ref["prompt"]) :]
    ids = llm.tokenize(STRESS.encode(), add_bos=False, special=False)
    scale = max(1.0, float(np.abs(ref["logits"]).max()))
    return Verification(
        consumer=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        max_logit_diff=diff,
        tolerance=GGUF_TOLERANCE * scale,
        tokens_match=list(ids) == ref["stress_ids"],
        greedy_match=greedy == ref["greedy"],
        positions=batch.size,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what C libraries (llama.cpp) print on the process's own stderr and stdout."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
