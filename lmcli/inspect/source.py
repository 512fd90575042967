"""What `lmcli inspect` looks at: a run's torch model and tokenizer, and the text's token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmcli.config import ModelConfig
from lmcli.corpus.text import read_text_file
from lmcli.errors import InputError
from lmcli.models import LanguageModel, Transformer
from lmcli.sampling.prompt import encode_prompt
from lmcli.tokenizers import Tokenizer

DROP_HINT = "pass --drop-unknown to leave them out (`lmcli inspect tokens` shows which)"


@dataclass(frozen=True)
class Subject:
    """A trained model opened for inspection: always the torch model (on the CPU, float32)."""

    model: LanguageModel
    tokenizer: Tokenizer
    config: ModelConfig
    run: Path
    step: int | None

    @property
    def is_transformer(self) -> bool:
        return isinstance(self.model, Transformer)

    @property
    def kind(self) -> str:
        return "transformer" if self.is_transformer else self.config.model.upper()

    def token_text(self, token: int) -> str:
        """One token as text (a byte that is part of a character shows as its hex)."""
        raw = self.tokenizer.decode_bytes([token])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<{b:02x}>" for b in raw)


def open_subject(run: Path) -> Subject:
    """The run's weights in the torch model, and its tokenizer (errors as `sample`'s)."""
    from lmcli.checkpoints import model_from_weights
    from lmcli.sampling.open import check_model_memory, tokenizer_of
    from lmcli.weights import read_weights, resolve_weights

    weights = read_weights(resolve_weights(run).path)
    check_model_memory(weights.config)
    tokenizer = tokenizer_of(weights)
    model = model_from_weights(weights)
    return Subject(model, tokenizer, weights.config, run, weights.step)


@dataclass
class Text:
    """The token ids a view runs on, and how they were had."""

    ids: list[int]
    source: str  # "the prompt", "FILE", "the validation split"
    raw: str  # the text itself
    notes: list[str] = field(default_factory=list)


def read_text(
    subject: Subject,
    prompt: str | None,
    file: Path | None,
    drop_unknown: bool = False,
    encode: bool = True,
) -> Text:
    """The prompt's or the file's ids; with neither, the start of the run's validation split.
    `encode` False keeps the raw text only (the tokens view shows unknown characters)."""
    if file is not None:
        prompt = read_text_file(file)
    if prompt is not None:
        if not prompt:
            raise InputError("the text is empty: give a prompt or a --file with some text")
        source = str(file) if file is not None else "the prompt"
        if not encode:
            return Text([], source, prompt)
        return Text(
            encode_prompt(subject.tokenizer, prompt, drop_unknown, hint=DROP_HINT), source, prompt
        )
    ids = validation_ids(subject, subject.config.context)
    return Text(ids, "the validation split", subject.tokenizer.decode(ids))


def validation_ids(subject: Subject, count: int, start: int = 0) -> list[int]:
    """`count` tokens of the run's validation split from `start` (fewer if it is shorter)."""
    from lmcli import rundir
    from lmcli.corpus.tokenfiles import open_tokens

    run_dir = subject.run if subject.run.is_dir() else subject.run.parent
    try:
        token_dir = rundir.load_config(run_dir).data
        tokens = open_tokens(token_dir, "val")
    except (InputError, OSError):
        raise InputError(
            f"no text given and no validation split found for {subject.run}",
            hint="give a PROMPT or --file",
        ) from None
    return [int(t) for t in np.asarray(tokens[start : start + count])]


def fit(text: Text, limit: int | None, what: str = "the model sees") -> list[int]:
    """The last `limit` ids of the text (all of them when limit is None), noting a cut."""
    if limit is None or len(text.ids) <= limit:
        return text.ids
    text.notes.append(
        f"the text is {len(text.ids):,} tokens and {what} {limit}: the last {limit} are shown"
    )
    return text.ids[-limit:]


def as_batch(ids: list[int]) -> torch.Tensor:
    return torch.tensor([ids], dtype=torch.long)  # (1, T)
