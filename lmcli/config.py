"""Typed, frozen configs shared by the CLI and the library.

Each field's name is its flag's name (`kv_heads` is `--kv-heads`), so errors can speak in flags.
`validate()` raises ConfigError before any work starts; it never asserts.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union

from lmcli.errors import ConfigError, InputError

# A uint32 token file holds ids below 2**32; we refuse vocabularies it cannot hold.
MAX_VOCAB_SIZE = 2**32
# Byte-level BPE starts from the 256 byte tokens and needs at least one merge.
MIN_BPE_VOCAB_SIZE = 256 + 1
DEFAULT_BPE_VOCAB_SIZE = 4096
OPTIMIZERS = ("adamw", "muon")
MUON_SCALES = ("tall", "aspect")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# No model is this deep; a config that says so is damaged (and would take hours just to list).
MAX_LAYERS = 10_000
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
# Every command takes the same seeds: any non-negative integer (a numpy generator takes them all;
# torch gets a 64-bit digest of one it cannot hold, see lmcli.training.loop).
SEED_HELP = "a non-negative integer"


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be {SEED_HELP} (got {seed!r})")


def check_device_name(name: str, flag: str = "--device") -> None:
    """The device names lmcli supports (availability is checked when it is used)."""
    if name in ("auto", "cpu", "mps", "cuda") or re.fullmatch(r"cuda:\d{1,4}", name):
        return
    raise ConfigError(f"unknown {flag} {name!r} ({DEVICE_NAMES})")


def _check_finite(values: dict[str, float]) -> None:
    for flag, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number (got {value})")


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})")


DOC_SEPARATORS = ("auto", "eot", "blank-line", "none")


@dataclass(frozen=True)
class TokenizeConfig:
    """What `lmcli tokenize` does; see `lmcli tokenize --help` for each field."""

    # A text file, a directory or glob of them, or the name of a corpus in data/corpora.json.
    corpus: str
    # "char", "bpe" (trained on the corpus) or a pretrained tiktoken encoding name ("gpt2", ...).
    tokenizer: str = "char"
    # Vocabulary size for "bpe" (256 byte tokens + merges); None means DEFAULT_BPE_VOCAB_SIZE.
    vocab_size: int | None = None
    # The last fraction of the corpus (cut at a line boundary) becomes the validation split.
    val_fraction: float = 0.1
    # Output directory; None derives one under ./tokens from the corpus and tokenizer.
    out: Path | None = None
    # Replace an existing output directory.
    force: bool = False
    # Keep the text byte-exact: no BOM stripping, no newline normalisation, invalid UTF-8 is an
    # error. The default normalises (see lmcli/corpus/text.py).
    exact: bool = False
    # Where named corpora are downloaded; None means $LMCLI_DATA_DIR or the default cache.
    data_dir: Path | None = None
    # Size of the pieces the corpus is streamed in (cut at line boundaries).
    chunk_bytes: int = 1 << 20
    # BPE merges are learned on at most this many MB of the training split, spread evenly over
    # it: the trainer's memory grows with the text it counts (~1.5 MB per MB of varied text).
    bpe_train_mb: float = 32.0
    # Threads that encode pieces in parallel; None means min(cores, 4).
    threads: int | None = None
    # Hold out the last N files of a directory or glob for validation (instead of val_fraction).
    val_files: int | None = None
    # What follows each document of a corpus of several files: auto (char: a blank line, else
    # <|endoftext|>), eot, blank-line or none.
    doc_separator: str = "auto"
    # Encode with the tokenizer saved in this run or token directory instead of making one.
    tokenizer_from: Path | None = None
    # With tokenizer_from (char): leave out characters its vocabulary lacks instead of refusing.
    drop_unknown: bool = False

    @property
    def bpe_vocab_size(self) -> int:
        return self.vocab_size if self.vocab_size is not None else DEFAULT_BPE_VOCAB_SIZE

    @property
    def tokenizer_spec(self) -> str:
        """Short name of the tokenizer: "char", "bpe4096", "gpt2"."""
        return f"bpe{self.bpe_vocab_size}" if self.tokenizer == "bpe" else self.tokenizer

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:  # NaN fails this too
            raise ConfigError(f"--val-fraction must be between 0 and 1 (got {self.val_fraction})")
        if self.tokenizer_from is not None and (self.tokenizer != "char" or self.vocab_size):
            raise ConfigError(
                "--tokenizer-from uses a saved tokenizer: --tokenizer and --vocab-size do not apply"
            )
        if self.drop_unknown and self.tokenizer_from is None:
            raise ConfigError("--drop-unknown applies with --tokenizer-from (or --init-from)")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise ConfigError(
                f"--vocab-size applies to --tokenizer bpe only (got --tokenizer {self.tokenizer})",
                hint="a char vocabulary is the corpus's characters; a pretrained one is fixed",
            )
        size = self.bpe_vocab_size
        if self.tokenizer == "bpe" and size < MIN_BPE_VOCAB_SIZE:
            raise ConfigError(
                f"--vocab-size must be at least {MIN_BPE_VOCAB_SIZE} "
                f"(256 byte tokens + 1 merge) (got {size})"
            )
        if self.tokenizer == "bpe" and size > MAX_VOCAB_SIZE:
            raise ConfigError(
                f"--vocab-size must be at most {MAX_VOCAB_SIZE} (what a uint32 token file holds) "
                f"(got {size})"
            )
        if not self.bpe_train_mb > 0 or not math.isfinite(self.bpe_train_mb):
            raise ConfigError(f"--bpe-train-mb must be a positive number (got {self.bpe_train_mb})")
        check_threads(self.threads)
        if self.val_files is not None and self.val_files < 1:
            raise ConfigError(f"--val-files must be at least 1 (got {self.val_files})")
        if self.doc_separator not in DOC_SEPARATORS:
            raise ConfigError(
                f"--doc-separator must be one of {', '.join(DOC_SEPARATORS)} "
                f"(got {self.doc_separator!r})"
            )
        if self.chunk_bytes < 1024:
            raise ConfigError(f"chunk size must be at least 1024 bytes (got {self.chunk_bytes})")


ModelKind = Literal["transformer", "lstm", "gru"]
PosKind = Literal["learned", "sinusoidal", "rope", "none"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
MlpKind = Literal["gelu", "swiglu", "relu2"]


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A config field that is also a flag of `lmcli train` (lmcli/cli/options.py makes the flag
    from its name, type and help; a Literal type's values are listed after the help)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class ModelConfig:
    """The network: a decoder-only transformer or a recurrent (LSTM/GRU) baseline."""

    model: ModelKind = setting("transformer", "The network:")
    # Set from the token data's meta.json, never by hand.
    vocab_size: int = setting(256, "", flag=False)
    layers: int = setting(4, "Number of layers.")
    # Transformer: residual width C. LSTM/GRU: hidden size.
    width: int = setting(128, "Residual width (transformer) or hidden size (LSTM/GRU).")
    heads: int = setting(4, "Attention (query) heads.")
    # None means "= heads".
    kv_heads: int | None = setting(
        None, "Key/value heads: = heads is multi-head, 1 multi-query, a divisor grouped-query."
    )
    # Context length T (tokens the model sees at once; the training sequence length).
    context: int = setting(64, "Context length in tokens (the training sequence length).")
    pos: PosKind = setting("rope", "Positions:")
    norm: NormKind = setting("rmsnorm", "Norm:")
    norm_placement: NormPlacement = setting(
        "pre", "Norm before each sublayer (GPT-2 onwards) or after its residual addition (2017):"
    )
    mlp: MlpKind = setting("gelu", "MLP activation:")
    # None means every layer is global.
    window: int | None = setting(
        None, "Sliding-window width W of the local layers (none: all global)."
    )
    # "SL" alternates, as GPT-3 did; "SSSL" is nanochat's. Ignored when window is None.
    window_pattern: str = setting(
        "SL", "Layer pattern, repeated over the layers: S local, L global (SL alternates)."
    )
    dropout: float = setting(0.0, "Dropout probability.")
    tie: bool = setting(True, "Share the token embedding with the LM head.")
    bias: bool = setting(False, "Biases in linear layers and LayerNorm.")
    # None means = width (which also allows a tied head).
    embedding: int | None = setting(None, "LSTM/GRU embedding size (default: width).")

    @property
    def n_kv_heads(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    def layer_windows(self) -> list[int | None]:
        """Per layer, the sliding-window width or None for a global (full causal) layer."""
        if self.window is None:
            return [None] * self.layers
        pattern = self.window_pattern.upper()
        return [
            self.window if pattern[i % len(pattern)] == "S" else None for i in range(self.layers)
        ]

    def validate(self) -> None:
        positive = {"--layers": self.layers, "--width": self.width, "--context": self.context}
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        if self.layers > MAX_LAYERS:
            raise ConfigError(f"--layers must be at most {MAX_LAYERS:,} (got {self.layers:,})")
        if self.vocab_size < 1:
            raise ConfigError(f"vocabulary size must be at least 1 (got {self.vocab_size})")
        if not 0.0 <= self.dropout < 1.0:  # NaN fails this too
            raise ConfigError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not re.fullmatch(r"[SLsl]+", self.window_pattern):
            raise ConfigError(
                f"--window-pattern must be letters S (local) and L (global), e.g. SL "
                f"(got {self.window_pattern!r})"
            )
        if self.embedding is not None and self.embedding < 1:
            raise ConfigError(f"--embedding must be at least 1 (got {self.embedding})")
        if self.model == "transformer" and self.embedding is not None:
            raise ConfigError(
                "--embedding applies to --model lstm or gru only",
                hint="a transformer's embedding size is --width",
            )
        if self.model != "transformer":
            if self.tie and self.embedding is not None and self.embedding != self.width:
                raise ConfigError(
                    f"--tie needs --embedding equal to --width "
                    f"(got {self.embedding} and {self.width})",
                    hint="pass --no-tie, or leave --embedding unset",
                )
            return
        if self.heads < 1:
            raise ConfigError(f"--heads must be at least 1 (got {self.heads})")
        if self.width % self.heads != 0:
            raise ConfigError(f"--heads must divide --width (got {self.heads} and {self.width})")
        kv = self.n_kv_heads
        if kv < 1 or self.heads % kv != 0:
            raise ConfigError(f"--kv-heads must divide --heads (got {kv} and {self.heads})")
        head_dim = self.width // self.heads
        if self.pos == "rope" and head_dim % 2 != 0:
            raise ConfigError(
                f"--pos rope needs an even head size, --width / --heads (got {head_dim})"
            )
        if self.window is not None and not 1 <= self.window <= self.context:
            raise ConfigError(
                f"--window must be between 1 and --context (got {self.window} and {self.context})"
            )


TYPE_NAMES: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    str: "text",
    bool: "true or false",
}


def checked_value(key: str, value: Any, hint: Any) -> Any:
    """`value` if it fits the field's type (ints pass as floats), else a ConfigError."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return value
        if typing.get_origin(option) is Literal:
            if value in typing.get_args(option):
                return value
            continue
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool) and isinstance(value, option):
            return value
    allowed = [
        "one of " + "/".join(map(str, typing.get_args(o))) if typing.get_origin(o) is Literal
        else TYPE_NAMES.get(o, o.__name__)
        for o in options
        if o is not type(None)
    ]  # fmt: skip
    raise ConfigError(f"--{key} must be {' or '.join(allowed)} (got {value!r})")


def model_config_from_json(text: str, where: str) -> ModelConfig:
    """The ModelConfig a checkpoint or weights file records (JSON of its fields), validated;
    an InputError naming `where` for anything else."""
    import dataclasses
    import json

    try:
        fields = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise InputError(f"{where}: its model config is not valid JSON") from None
    if not isinstance(fields, dict):
        raise InputError(f"{where}: its model config is not a JSON object")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise InputError(
            f"{where}: unknown model config fields: {', '.join(unknown)}",
            hint="it was probably written by a newer lmcli",
        )
    hints = typing.get_type_hints(ModelConfig)
    try:
        cfg = ModelConfig(**{k: checked_value(k.replace("_", "-"), v, hints[k])
                             for k, v in fields.items()})  # fmt: skip
        cfg.validate()
    except ConfigError as exc:
        raise InputError(f"{where}: its model config is invalid: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # a field of the wrong type
        raise InputError(f"{where}: its model config is invalid ({exc})") from None
    return cfg


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimisation, budget, evaluation, device. Flags share the field names."""

    batch_size: int = setting(32, "Sequences per micro-batch.")
    # The step sees batch_size * grad_accum sequences.
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    # Reached after `warmup` steps, then cosine decay to lr * min_lr_ratio.
    lr: float = setting(3e-3, "Peak learning rate (of every parameter AdamW updates).")
    warmup: int = setting(50, "Linear warmup steps.")
    min_lr_ratio: float = setting(0.0, "The decay ends at lr times this.")
    # None: cosine from the end of warmup to the end of the budget.
    decay_fraction: float | None = setting(
        None,
        "Hold the peak rate, then decay linearly to the floor over this last fraction of the "
        "budget (warmup-stable-decay; none: a cosine over the whole budget).",
    )
    # "64:0.3,128:0.7": 64-token sequences for the first 30 % of the budget, 128 until 70 %,
    # then the full context; each step keeps its tokens (batch_size * context), in more rows.
    seq_warmup: str | None = setting(
        None,
        "Train on shorter sequences first: '64:0.3,128:0.7' is 64 tokens until 30 % of the "
        "budget, 128 until 70 %, then the context (same tokens per step, in more rows); a "
        "length at or past the context keeps the windows whole; 'none' turns it off.",
    )
    weight_decay: float = setting(0.1, "Decoupled weight decay of the weight matrices.")
    # Muon: the hidden matrices at `muon_lr`, AdamW at `lr` for embeddings, head, gains and
    # biases (lmcli/training/optim.py).
    optimizer: str = setting(
        "adamw", "adamw, or muon: Muon for the hidden matrices, AdamW at --lr for the rest."
    )
    muon_lr: float = setting(0.02, "Peak learning rate of the Muon matrices.")
    # Each matrix's orthogonalised step is scaled back up by its shape (optim.shape_scale).
    muon_scale: str = setting(
        "tall",
        "How Muon scales a matrix's orthogonalised update: tall (by sqrt(rows / columns) when "
        "rows > columns, as in Keller Jordan's Muon) or aspect (by sqrt(long side / short "
        "side), wide matrices too: every entry then moves by the same RMS, 1/sqrt(short side)).",
    )
    # The token embedding's rows move only when their token is in the batch, and each row is
    # looked up, not multiplied into a hidden state: it can take a far larger rate than the
    # head (the README's 3-minute recipe measured 10x). None: --lr, like the rest.
    embedding_lr: float | None = setting(
        None,
        "Peak learning rate of the token embedding table (AdamW; default: --lr). With a tied "
        "head the table is the head too.",
    )
    beta1: float = setting(0.9, "AdamW's first-moment decay, in [0, 1).")
    beta2: float = setting(0.99, "AdamW's second-moment decay, in [0, 1).")
    grad_clip: float = setting(1.0, "Clip the gradients' global norm to this.")
    # Steps and/or seconds of training (evaluation and checkpoints not counted); the schedule
    # runs to whichever ends first. Neither set: train until Ctrl-C (cosine over 5000 steps).
    max_steps: int | None = setting(None, "Stop after this many steps.")
    max_time: float | None = setting(
        None, "Stop after this much training time (90s, 3m, 1h30m; eval excluded).", duration=True
    )
    eval_every: int = setting(250, "Evaluate on the whole validation split every N steps.")
    # Learning curves of time-budgeted runs, whose step count is not known in advance.
    eval_interval: float | None = setting(
        None, "Also evaluate every this much training time (30s, 2m).", duration=True
    )
    log_every: int = setting(10, "Log a line and a metrics row every N steps.")
    # Watching the model learn: the same seed each time, so only the model changes the text.
    sample_every: int | None = setting(
        None, "Print a short sample (seeded, 100 tokens) to stderr at every N-th evaluation."
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    dtype: str = setting("auto", "auto, float32, bfloat16 or float16 (autocast).")
    # None means on for CUDA, and on a CPU for a transformer whose run trains long enough to
    # repay compiling (training/loop.py: COMPILE_PAYS_SECONDS); off on MPS and --processes.
    compile: bool | None = setting(
        None,
        "torch.compile the model before the clock starts (default: on for CUDA, and on a CPU "
        "for a transformer run of 2 minutes or more).",
    )
    # None measures 1 and one per core and keeps the faster (devices.py).
    threads: int | None = setting(
        None, "CPU threads (default: 1 or one per core, whichever a timed step says)."
    )
    seed: int = setting(1337, "Random seed (any non-negative integer).")

    def validate(self) -> None:
        at_least_one = {
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--eval-every": self.eval_every,
            "--log-every": self.log_every,
        }
        for flag, value in at_least_one.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        _check_finite({"--lr": self.lr, "--muon-lr": self.muon_lr,
                       "--weight-decay": self.weight_decay, "--grad-clip": self.grad_clip,
                       "--beta1": self.beta1, "--beta2": self.beta2})  # fmt: skip
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive (got {self.lr})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})"
            )
        if not self.muon_lr > 0:
            raise ConfigError(f"--muon-lr must be positive (got {self.muon_lr})")
        if self.muon_scale not in MUON_SCALES:
            raise ConfigError(
                f"--muon-scale must be one of {', '.join(MUON_SCALES)} (got {self.muon_scale!r})"
            )
        if self.embedding_lr is not None:
            _check_finite({"--embedding-lr": self.embedding_lr})
            if not self.embedding_lr > 0:
                raise ConfigError(f"--embedding-lr must be positive (got {self.embedding_lr})")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be at least 0 (got {self.weight_decay})")
        if not self.grad_clip > 0:
            raise ConfigError(f"--grad-clip must be positive (got {self.grad_clip})")
        for flag, beta in (("--beta1", self.beta1), ("--beta2", self.beta2)):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{flag} must be in [0, 1) (got {beta})")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be at least 0 (got {self.warmup})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1 (got {self.max_steps})")
        if self.max_time is not None and not self.max_time > 0:
            raise ConfigError(f"--max-time must be positive (got {self.max_time})")
        if self.sample_every is not None and self.sample_every < 1:
            raise ConfigError(f"--sample-every must be at least 1 (got {self.sample_every})")
        if self.eval_interval is not None and not self.eval_interval > 0:
            raise ConfigError(f"--eval-interval must be positive (got {self.eval_interval})")
        check_threads(self.threads)
        if not 0.0 <= self.min_lr_ratio <= 1.0:  # NaN fails this too
            raise ConfigError(f"--min-lr-ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if self.decay_fraction is not None and not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"--decay-fraction must be in (0, 1] (got {self.decay_fraction})")
        if self.seq_warmup is not None:
            parse_seq_warmup(self.seq_warmup)
        check_device_name(self.device)
        if self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"unknown --dtype {self.dtype!r} ({', '.join(DTYPE_NAMES)})")
        check_seed(self.seed)


@functools.cache  # the training loop asks at every step: parse each spec once
def parse_seq_warmup(text: str) -> tuple[tuple[int, float], ...]:
    """The (sequence length, budget fraction it lasts until) stages of --seq-warmup, in order:
    lengths and fractions both increasing, fractions in (0, 1); "none" is no stage at all."""
    stages: list[tuple[int, float]] = []
    if text.strip().lower() == "none":
        return ()
    for part in text.split(","):
        length_text, colon, until_text = part.strip().partition(":")
        stage: tuple[int, float] | None
        try:
            stage = (int(length_text), float(until_text))
        except ValueError:
            stage = None
        if not colon or stage is None:
            raise ConfigError(
                f"--seq-warmup must look like 64:0.3,128:0.7 (got {text!r})",
                hint="each stage is a sequence length and the budget fraction it lasts until",
            )
        stages.append(stage)
    for (length, until), (before, start) in zip(stages, [(0, 0.0), *stages], strict=False):
        if not length > before or not start < until < 1.0:
            raise ConfigError(
                f"--seq-warmup's lengths and fractions must both increase, the fractions "
                f"within (0, 1) (got {text!r})"
            )
    return tuple(stages)


def parse_duration(text: str, flag: str = "--max-time") -> float:
    """Seconds in "90", "90s", "3m", "1h30m", "1.5h"; `flag` names the option in errors."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigError(f"{flag} must look like 90s, 3m or 1h30m (got {text!r})")
    return sum(float(n) * units[u] for n, u in parts)


@dataclass(frozen=True)
class EvalConfig:
    """What `lmcli eval` measures; the fields are its flags (see `lmcli eval --help`)."""

    # A run directory or a weights file (its run's tokenizer sits beside it).
    run: Path
    # A token directory, or text (a file, folder, glob or named corpus); None: the run's data.
    data: str | None = None
    # Of a token directory (or the run's data): which split.
    split: str = "val"
    # Also the mean loss at each position 0..T-1 of the window.
    by_position: bool = False
    # Leave out of a text the characters a char vocabulary lacks, instead of refusing it.
    drop_unknown: bool = False
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 64

    def validate(self) -> None:
        if self.split not in ("train", "val"):
            raise ConfigError(f"--split must be train or val (got {self.split!r})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {self.batch_size})")
        check_threads(self.threads)
        check_device_name(self.device)


@dataclass(frozen=True)
class ExportConfig:
    """What `lmcli export` writes; the fields are its flags (see `lmcli export --help`)."""

    # A run directory (its best.safetensors) or a weights file beside its tokenizer.json.
    run: Path
    format: str = "hf"  # "hf": a transformers folder; "gguf": one llama.cpp file
    # None: exports/RUN-hf or exports/RUN.gguf.
    out: Path | None = None
    force: bool = False
    # Load the export in transformers or llama.cpp and compare with lmcli's forward.
    verify: bool = True

    def validate(self) -> None:
        if self.format not in ("hf", "gguf"):
            raise ConfigError(f"--format must be hf or gguf (got {self.format!r})")
        if self.format == "gguf" and self.out is not None and self.out.suffix != ".gguf":
            raise ConfigError(f"--out for GGUF is a .gguf file (got {self.out})")


@dataclass(frozen=True)
class SampleConfig:
    """How `lmcli sample` generates; the fields are its flags (see `lmcli sample --help`)."""

    # Text the samples continue. A newline suits a model of plays: it starts a fresh line.
    prompt: str = "\n"
    max_new_tokens: int = 500
    # 0 is greedy (argmax); below 1 sharpens the distribution, above 1 flattens it.
    temperature: float = 0.8
    # Draw from the k most likely tokens only (nanoGPT's 200: no limit on a 65-character vocab).
    top_k: int | None = 200
    # Draw from the smallest set of tokens whose probabilities reach p (nucleus); None: all.
    top_p: float | None = None
    # The model conditions on at most this many of the most recent tokens. None: a transformer's
    # context, or unbounded for an LSTM/GRU. See lmcli/sampling/generate.py for the sliding rule.
    context_window: int | None = None
    # Samples generated together, as one batch.
    num_samples: int = 1
    seed: int = 1337
    # "cpu" decodes in C (a transformer) or numpy (an LSTM/GRU): no torch import, the least
    # overhead per token; other devices run the torch models (lmcli/sampling/engines).
    device: str = "cpu"
    # CPU threads. One by default: decoding one token of a small model is a chain of tiny
    # operations, which more threads only make wait on each other.
    threads: int = 1
    # Drop prompt characters a char model has never seen, instead of refusing the prompt.
    drop_unknown: bool = False
    # A sample ends when its text contains one of these (not shown), or at <|endoftext|>.
    stop: tuple[str, ...] = ()
    stop_at_eot: bool = False
    # Above 1, tokens already in the sequence are less likely again (CTRL's penalty: a positive
    # logit is divided by it, a negative one multiplied). 1 is off.
    repetition_penalty: float = 1.0

    def validate(self) -> None:
        # Imported here: choose.py needs numpy, which this module leaves to its users.
        from lmcli.sampling.choose import check_settings

        check_settings(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
        if any(not s for s in self.stop):
            raise ConfigError("--stop needs a non-empty string", hint='e.g. --stop "\\n\\n"')
        at_least_one = {"--max-new-tokens": self.max_new_tokens, "--num-samples": self.num_samples}
        for flag, value in at_least_one.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        if self.context_window is not None and self.context_window < 1:
            raise ConfigError(f"--context-window must be at least 1 (got {self.context_window})")
        check_threads(self.threads)
        check_seed(self.seed)
        check_device_name(self.device)


MATCHES = ("params", "time")


@dataclass(frozen=True)
class CompareConfig:
    """What `lmcli compare-rnn` trains and measures; see `lmcli compare-rnn --help`."""

    # A token directory, a text file or a named corpus, as for `lmcli train`.
    corpus: str = "shakespeare"
    # The models, each trained on the same tokens, context, batch, seed and budget.
    models: tuple[str, ...] = ("transformer", "lstm")
    # The budget per model: seconds of training (evaluation excluded), or optimiser steps.
    budget: float | None = 180.0
    steps: int | None = None
    # "params": each recurrent model's width is chosen so that its parameter count is within 10 %
    # of the transformer's. "time": each model keeps its own size (the transformer its preset's,
    # a recurrent model char-rnn's 2 x 128) and only the training time is the same.
    match: str = "params"
    # The transformer's preset; its context, batch and optimiser settings apply to every model.
    preset: str = "quick"
    rnn_layers: int = 2
    # Evaluations over the training budget, for the learning curves.
    eval_points: int = 12
    # The sample of each model: the same prompt and seed.
    prompt: str = "\n"
    sample_tokens: int = 300
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    # The comparison's folder: tokens, one run directory per model, the reports.
    out: Path = Path("runs/compare-rnn")

    def validate(self) -> None:
        kinds = ("transformer", "lstm", "gru")
        unknown = [m for m in self.models if m not in kinds]
        if unknown:
            raise ConfigError(
                f"--models: unknown model {unknown[0]!r}", hint=f"choose from {', '.join(kinds)}"
            )
        if len(set(self.models)) != len(self.models) or len(self.models) < 2:
            raise ConfigError(
                f"--models needs at least two different models (got {','.join(self.models)})",
                hint="for example --models transformer,lstm,gru",
            )
        if (self.budget is None) == (self.steps is None):
            raise ConfigError("give one budget: --budget (training time) or --steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(
                f"--steps {self.steps} is too small to evaluate even once",
                hint="each model needs at least one step before its evaluation",
            )
        if self.budget is not None and not self.budget > 0:
            raise ConfigError(
                f"--budget {self.budget:g}s is too small to evaluate even once",
                hint="give each model some training time, e.g. --budget 3m",
            )
        if self.match not in MATCHES:
            raise ConfigError(f"--match must be params or time (got {self.match!r})")
        if self.match == "time" and self.budget is None:
            raise ConfigError("--match time compares equal training times: give --budget")
        if self.match == "params" and "transformer" not in self.models:
            raise ConfigError(
                "--match params sizes the recurrent models to the transformer: include it",
                hint="add transformer to --models, or use --match time",
            )
        positive = {"--rnn-layers": self.rnn_layers, "--eval-points": self.eval_points,
                    "--sample-tokens": self.sample_tokens}  # fmt: skip
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1 (got {value})")
        check_seed(self.seed)
        check_device_name(self.device)
        check_threads(self.threads)


INSPECT_VIEWS = ("tokens", "next", "attention", "surprise", "heads", "memory", "lens", "positions")


@dataclass(frozen=True)
class InspectConfig:
    """What `lmcli inspect` shows; the fields are its flags (see `lmcli inspect --help`)."""

    # A run directory or a weights file beside its tokenizer.json.
    run: Path
    # One of INSPECT_VIEWS; None is the tour (tokens, next, one attention head, lens).
    view: str | None = None
    # The text to look at: a prompt, a file, or (neither) the start of the run's validation split.
    prompt: str | None = None
    file: Path | None = None
    # Where the PNG per view and the HTML page go; None: the terminal only.
    out: Path | None = None
    # attention: one layer / one head (0-based); query: one query position as bars.
    layer: int | None = None
    head: int | None = None
    query: int | None = None
    # attention: also the scores before the mask and the mask itself.
    stages: bool = False
    # next: the temperatures side by side, and the sampler's filters.
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0)
    top_k: int | None = None
    top_p: float | None = None
    # tokens: also the text in this pretrained tiktoken encoding ("gpt2", ...).
    vs: str | None = None
    # surprise, memory: a second run (same tokenizer) to set beside the first.
    compare: Path | None = None
    # Rows in a ranking (next's tokens, surprise's most surprising tokens).
    top: int = 10
    # heads and memory draw random tokens: the seed makes them repeatable.
    seed: int = 0
    # Leave out the characters a char vocabulary lacks, instead of refusing the text.
    drop_unknown: bool = False

    def validate(self) -> None:
        if self.view is not None and self.view not in INSPECT_VIEWS:
            raise ConfigError(
                f"unknown view {self.view!r} (one of {', '.join(INSPECT_VIEWS)})",
                hint="or leave it out for the tour: lmcli inspect RUN PROMPT",
            )
        if self.prompt is not None and self.file is not None:
            raise ConfigError("give a PROMPT or --file, not both")
        for flag, value in (("--layer", self.layer), ("--head", self.head),
                            ("--query", self.query)):  # fmt: skip
            if value is not None and value < 0:
                raise ConfigError(f"{flag} must be at least 0 (got {value})")
        if not self.temperatures:
            raise ConfigError("--temperature needs at least one value")
        for t in self.temperatures:
            if not 0 <= t < float("inf"):
                raise ConfigError(f"--temperature values must be at least 0 (got {t})")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be at least 1 (got {self.top_k})")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if self.top < 1:
            raise ConfigError(f"--top must be at least 1 (got {self.top})")
        check_seed(self.seed)
