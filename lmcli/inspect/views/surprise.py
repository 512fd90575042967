"""surprise: the text coloured by how surprised the model is by each token, in bits.

A token's surprisal is -log2 p(token | the tokens before it): 0 bits when the model was sure of
it, log2 V when it guessed no better than uniform. Their mean, in nats, is the cross-entropy the
training loop reports on the same window, and bits per byte divides their sum by the text's
bytes, as training's evaluation does (it then compares across tokenizers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmcli.config import InspectConfig
from lmcli.errors import InputError
from lmcli.inspect.panels import Panel, Span, Spans, Table, ViewResult
from lmcli.inspect.source import Subject, Text, as_batch, fit, open_subject

GUESSES = 3
# A difference of this many bits per token or more gets the full colour in --compare.
COMPARE_BITS = 4.0


@dataclass(frozen=True)
class Surprisal:
    bits: list[float]  # per predicted token: ids[1:]
    guesses: list[list[tuple[int, float]]]  # the model's top guesses (id, probability) per token
    cross_entropy: float  # mean nats per predicted token
    bits_per_byte: float


def surprisal(subject: Subject, ids: list[int]) -> Surprisal:
    """Each token's surprisal given the ones before it (the first has no prediction)."""
    if len(ids) < 2:
        raise InputError(
            "surprise needs a text of at least 2 tokens (the first is never predicted)"
        )
    x, y = as_batch(ids[:-1]), as_batch(ids[1:])
    with torch.no_grad():
        logits, loss = subject.model(x, y)  # (1, T, V)
    logp = F.log_softmax(logits[0].double(), dim=-1)  # (T, V)
    nats = -logp.gather(1, y[0, :, None])[:, 0]  # (T,)
    top = logp.topk(min(GUESSES, logp.shape[-1]), dim=-1)
    guesses = [
        [(int(i), math.exp(float(v))) for v, i in zip(vs, ix, strict=True)]
        for vs, ix in zip(top.values, top.indices, strict=True)
    ]
    size = len(subject.tokenizer.decode_bytes(ids[1:]))
    assert loss is not None
    return Surprisal(
        bits=(nats / math.log(2)).tolist(),
        guesses=guesses,
        cross_entropy=float(nats.mean()),
        bits_per_byte=float(nats.sum()) / math.log(2) / max(size, 1),
    )


def _spans(subject: Subject, ids: list[int], values: list[float], tip: str) -> list[Span]:
    spans = [Span(subject.token_text(ids[0]), None, "the first token: nothing predicts it")]
    for token, value in zip(ids[1:], values, strict=True):
        spans.append(Span(subject.token_text(token), value, tip.format(value)))
    return spans


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    limit = subject.model.max_positions
    ids = fit(text, None if limit is None else limit + 1)
    result = surprisal(subject, ids)
    uniform = math.log2(subject.config.vocab_size)
    panels: list[Panel] = [
        Spans(
            f"surprisal: {result.bits_per_byte:.3f} bits per byte",
            _spans(subject, ids, result.bits, "{:.2f} bits"),
            lo=0.0,
            hi=uniform,
            legend=f"surprisal, 0 to {uniform:.1f} bits (uniform guessing)",
        )
    ]
    worst = sorted(range(len(result.bits)), key=lambda t: -result.bits[t])[: cfg.top]
    rows: list[list[str | float | int]] = []
    for t in worst:
        guesses = ", ".join(f"{subject.token_text(i)!r} {p:.0%}" for i, p in result.guesses[t])
        rows.append(
            [t + 1, repr(subject.token_text(ids[t + 1])), round(result.bits[t], 2), guesses]
        )
    panels.append(
        Table(
            "the most surprising tokens", ["position", "token", "bits", "the model's guesses"], rows
        )
    )
    data: dict[str, object] = {
        "tokens": [subject.token_text(t) for t in ids],
        "bits": result.bits,
        "cross_entropy": result.cross_entropy,
        "bits_per_token": result.cross_entropy / math.log(2),
        "bits_per_byte": result.bits_per_byte,
        "most_surprising": [
            {"position": t + 1, "bits": result.bits[t], "guesses": result.guesses[t]} for t in worst
        ],
    }
    if cfg.compare is not None:
        other = open_subject(cfg.compare)
        if other.tokenizer.fingerprint() != subject.tokenizer.fingerprint():
            raise InputError(
                f"{cfg.compare} uses another tokenizer than {cfg.run}",
                hint="compare runs trained on the same token data",
            )
        theirs = surprisal(other, ids)
        diff = [b - a for a, b in zip(result.bits, theirs.bits, strict=True)]
        panels.append(
            Spans(
                f"{cfg.compare.name} minus {cfg.run.name}: "
                f"{theirs.bits_per_byte:.3f} vs {result.bits_per_byte:.3f} bits per byte",
                _spans(subject, ids, diff, "{:+.2f} bits"),
                lo=-COMPARE_BITS,
                hi=COMPARE_BITS,
                legend=f"difference in bits: -{COMPARE_BITS:g} "
                f"({other.kind} less surprised) to +{COMPARE_BITS:g} (more)",
            )
        )
        data["compare"] = {
            "run": str(cfg.compare),
            "bits": theirs.bits,
            "difference": diff,
            "cross_entropy": theirs.cross_entropy,
            "bits_per_byte": theirs.bits_per_byte,
        }
    return ViewResult(
        "surprise",
        "Surprise",
        "Each token coloured by the model's surprisal, -log2 p(token | what came before): the "
        "darker, the less the model expected it; the table names the worst and what the model "
        "guessed instead.",
        panels,
        data,
        text.notes,
    )
