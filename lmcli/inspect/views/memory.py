"""memory: how far back a model remembers, measured by changing one token d positions back.

For each distance d = 1, 2, 4, ... the token d positions before the last one is replaced by a
random other token, and the change in the model's next-token distribution is measured as
KL(before || after) in bits, averaged over windows of validation text and replacements. A
transformer reads only its last `context` tokens, so for d at or past the context its curve is
exactly zero; an LSTM or GRU carries a state of any length, and its curve fades instead: the
explainers' "RNNs forget" measured on the user's own models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmcli.config import InspectConfig
from lmcli.errors import InputError
from lmcli.inspect.panels import Lines, Panel, ViewResult
from lmcli.inspect.source import Subject, Text, open_subject, validation_ids

WINDOWS = 16  # windows of validation text averaged over
REPLACEMENTS = 4  # random replacements per window and distance


def distances(longest: int) -> list[int]:
    """1, 2, 4, ... up to `longest`, which is included."""
    out = [1]
    while out[-1] * 2 < longest:
        out.append(out[-1] * 2)
    return [*out, longest] if out[-1] != longest else out


def last_log_probs(subject: Subject, seqs: torch.Tensor) -> torch.Tensor:
    """log p(next token) (N, V) after each sequence (N, L), as `sample` computes it: a
    transformer sees the last `context` tokens, a recurrent model all of them."""
    limit = subject.model.max_positions
    if limit is not None:
        seqs = seqs[:, -limit:]
    with torch.no_grad():
        logits, _ = subject.model(seqs)  # (N, L, V)
    return F.log_softmax(logits[:, -1].double(), dim=-1)  # (N, V)


def kl_by_distance(
    subject: Subject, windows: torch.Tensor, ds: list[int], seed: int
) -> list[float]:
    """Mean KL(before || after) in bits, per distance, over the windows (N, L)."""
    rng = np.random.default_rng(seed)
    before = last_log_probs(subject, windows)  # (N, V)
    before = before.repeat_interleave(REPLACEMENTS, dim=0)  # (N * R, V)
    V = subject.config.vocab_size
    out = []
    for d in ds:
        changed = windows.repeat_interleave(REPLACEMENTS, dim=0).clone()  # (N * R, L)
        column = changed.shape[1] - 1 - d
        old = changed[:, column].numpy()
        new = (old + rng.integers(1, V, size=old.shape)) % V  # any token but the old one
        changed[:, column] = torch.from_numpy(new)
        after = last_log_probs(subject, changed)
        kl = (before.exp() * (before - after)).sum(dim=-1)  # (N * R,)
        out.append(float(kl.clamp_min(0).mean()) / math.log(2))
    return out


def windows_for(subject: Subject, text: Text, longest: int) -> tuple[torch.Tensor, list[str]]:
    """(N, longest + 1) token windows: of the text when it is long enough, else of the
    validation split."""
    length = longest + 1
    if text.source != "the validation split" and len(text.ids) >= length:
        return torch.tensor([text.ids[-length:]]), []
    notes = []
    if text.source != "the validation split":
        notes.append(
            f"the text has {len(text.ids)} tokens and the longest distance needs "
            f"{length}: measured on validation text instead"
        )
    ids = validation_ids(subject, WINDOWS * length)
    count = len(ids) // length
    if count == 0:
        raise InputError(
            f"memory needs at least {length} tokens of text (got {len(ids)})",
            hint="give a longer --file",
        )
    return torch.tensor(ids[: count * length]).view(count, length), notes


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    context = subject.config.context
    longest = 2 * context  # past a transformer's context, where its curve must be zero
    # Powers of two, and the last distance a transformer sees and the first it cannot.
    ds = sorted({*distances(longest), context - 1, context} - {0})
    windows, notes = windows_for(subject, text, longest)
    curves = {f"{cfg.run.name} ({subject.kind})": kl_by_distance(subject, windows, ds, cfg.seed)}
    if cfg.compare is not None:
        other = open_subject(cfg.compare)
        if other.tokenizer.fingerprint() != subject.tokenizer.fingerprint():
            raise InputError(
                f"{cfg.compare} uses another tokenizer than {cfg.run}",
                hint="compare runs trained on the same token data",
            )
        curves[f"{cfg.compare.name} ({other.kind})"] = kl_by_distance(other, windows, ds, cfg.seed)
    series: dict[str, list[float | None]] = {k: list(v) for k, v in curves.items()}
    panels: list[Panel] = [
        Lines(
            "change in the next-token distribution",
            [float(d) for d in ds],
            series,
            x_label="distance d of the changed token (tokens back)",
            y_label="KL (bits)",
            log_x=True,
            log_y=True,
            note=f"the training context is {context} tokens; exactly 0 is not drawn on the "
            "log scale (a curve that stops has reached it)",
        )
    ]
    data = {
        "distances": ds,
        "kl_bits": curves,
        "windows": int(windows.shape[0]),
        "replacements": REPLACEMENTS,
        "context": context,
    }
    return ViewResult(
        "memory",
        "Memory",
        "How much the next-token distribution changes (KL, bits) when the token d positions back "
        "is replaced: a transformer's curve is exactly zero from its context on, a recurrent "
        "model's fades.",
        panels,
        data,
        [*text.notes, *notes],
    )
