"""`lmcli bench`: lmcli's own figures, measured on the machine at hand.

Three suites, each figure the median of repeated runs after a warm-up:
- tokenize: BPE merges learned for vocabularies 1024 and 4096, and encoding speed (MB/s);
- train: tokens/s, step time and the memory of a step (training.memory) for the tiny and small
  presets and an LSTM, through training.loop.train itself; on a GPU also model FLOPs
  utilisation against the GPU's dense bf16 peak;
- sample: tokens/s for new tokens with the KV cache and without (a full forward per token, as
  nanoGPT's sample.py decodes), and the time to the first token, through lmcli.sampling.

Nothing is downloaded: the text is --corpus (a file), else Tiny Shakespeare if a named-corpus
download is already cached, else a deterministic synthetic text (figures then say so).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmcli.bench.measure import Figure, timed
from lmcli.config import SampleConfig, TokenizeConfig
from lmcli.errors import InputError

SUITES = ("tokenize", "train", "sample")
BPE_VOCABS = (1024, 4096)
# Models of the train and sample suites: (name, preset, flags over it).
MODELS: dict[str, dict[str, Any]] = {
    "tiny": {"preset": "tiny"},
    "small": {"preset": "small"},
    "lstm": {"preset": "tiny", "model": "lstm", "layers": 2, "width": 512},
}
QUICK_MODELS = ("tiny", "lstm")
QUICK_TEXT = 1 << 18
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, for MFU.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass(frozen=True)
class BenchConfig:
    suites: tuple[str, ...] = SUITES
    models: tuple[str, ...] = tuple(MODELS)
    device: str = "auto"
    quick: bool = False
    corpus: Path | None = None
    repeats: int = 5
    sample_tokens: int = 500


@dataclass(frozen=True)
class Progress:
    message: str


def run_bench(cfg: BenchConfig, on_event: Callable[[Progress], None]) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="lmcli-bench-") as tmp:
        work = Path(tmp)
        text, source = _text(cfg, work)
        if "tokenize" in cfg.suites:
            on_event(Progress(f"tokenize: BPE on {source}"))
            figures += tokenize_suite(text, source, cfg)
        runs: dict[str, Path] = {}
        if "train" in cfg.suites or "sample" in cfg.suites:
            token_dir = _char_tokens(text, work)
            for name in cfg.models:
                on_event(Progress(f"train: {name}"))
                found, run_dir = train_figures(name, token_dir, work / name, cfg)
                runs[name] = run_dir
                if "train" in cfg.suites:
                    figures += [replace(f, settings={**f.settings, "text": source}) for f in found]
        if "sample" in cfg.suites:
            _quiet_torch_threads()
            for name in cfg.models:
                on_event(Progress(f"sample: {name}"))
                figures += sample_figures(name, runs[name], cfg)
    return figures


def _quiet_torch_threads() -> None:
    """Sampling runs on one thread without torch in `lmcli sample`; here torch has trained, and
    its idle OpenMP threads would spin on the second core. One torch thread gives `lmcli
    sample`'s conditions."""
    import torch

    torch.set_num_threads(1)


def _text(cfg: BenchConfig, work: Path) -> tuple[str, str]:
    """The benchmark text and what it is; --quick keeps its first 256 KB."""
    limit = QUICK_TEXT if cfg.quick else None
    if cfg.corpus is not None:
        return read_corpus(cfg.corpus, limit), cfg.corpus.name
    from lmcli.corpus.named import cached_corpus

    cached = cached_corpus("shakespeare")
    if cached is not None:
        return read_corpus(cached, limit), "shakespeare (cached)"
    size = QUICK_TEXT if cfg.quick else 1 << 20
    return synthetic_text(size), "synthetic text (no corpus given or cached)"


def read_corpus(path: Path, limit: int | None) -> str:
    """The text of a corpus as `lmcli tokenize` reads it: refused if binary, normalised (invalid
    bytes replaced); its first `limit` characters."""
    from lmcli.corpus.text import iter_text, scan_text_file

    size, _ = scan_text_file(path)
    pieces, length = [], 0
    for piece in iter_text(path, 0, size):
        pieces.append(piece)
        length += len(piece)
        if limit is not None and length >= limit:
            break
    return "".join(pieces)[:limit]


def synthetic_text(size: int, seed: int = 0) -> str:
    """Lines of words drawn from a fixed Zipf-like vocabulary: deterministic, text-shaped."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choice(letters[: 8 + i % 18]) for _ in range(1 + i % 9))
             for i in range(2000)]  # fmt: skip
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(words, weights, k=rng.randint(4, 14))).capitalize() + ".\n"
        out.append(line)
        length += len(line)
    return "".join(out)[:size]


def tokenize_suite(text: str, source: str, cfg: BenchConfig) -> list[Figure]:
    from lmcli.tokenizers.bpe import BpeTokenizer, train_bpe
    from lmcli.tokenizers.char import CharTokenizer

    repeats = 3 if cfg.quick else cfg.repeats
    mb = len(text.encode("utf-8")) / 1e6
    settings = {"text": source, "text_mb": round(mb, 3)}
    figures = []
    tokenizer = None
    for vocab in BPE_VOCABS:

        def learn(vocab: int = vocab) -> BpeTokenizer:
            try:
                return train_bpe([text], vocab)
            except InputError as exc:
                raise InputError(
                    f"the benchmark text ({source}, {mb:.3f} MB) is too small for BPE vocab "
                    f"{vocab}: {exc.message}",
                    hint="give a larger --corpus, or leave out the tokenize suite (--suite)",
                ) from None

        seconds = timed(learn, repeats)
        figures.append(Figure("tokenize", f"BPE merges for vocab {vocab}", "s", tuple(seconds),
                              {**settings, "vocab": vocab}))  # fmt: skip
        tokenizer = learn()
    assert tokenizer is not None
    seconds = timed(lambda: tokenizer.encode(text), repeats)
    figures.append(Figure("tokenize", f"BPE {BPE_VOCABS[-1]} encode (tiktoken)", "MB/s",
                          tuple(mb / s for s in seconds), {**settings, "threads": 1}))  # fmt: skip
    chars = CharTokenizer(text)
    seconds = timed(lambda: chars.encode(text), repeats)
    figures.append(Figure("tokenize", "char encode", "MB/s", tuple(mb / s for s in seconds),
                          settings))  # fmt: skip
    return figures


def _char_tokens(text: str, work: Path) -> Path:
    from lmcli.corpus.prepare import tokenize_corpus

    (work / "text.txt").write_text(text, encoding="utf-8")
    cfg = TokenizeConfig(corpus=str(work / "text.txt"), out=work / "tokens")
    return tokenize_corpus(cfg).out_dir


def train_figures(
    name: str, token_dir: Path, run_dir: Path, cfg: BenchConfig
) -> tuple[list[Figure], Path]:
    """Train `name` for a few steps through the real loop; figures from its per-step log."""
    import torch

    from lmcli import rundir
    from lmcli.checkpoints import load_model
    from lmcli.corpus.tokenfiles import TokenMeta
    from lmcli.devices import PeakMemory, resolve_placement
    from lmcli.presets import as_record, resolve
    from lmcli.training.loop import Logged, Started, train
    from lmcli.training.memory import first_batch_memory

    warmup, repeats = 2, (3 if cfg.quick else cfg.repeats)
    flags: dict[str, Any] = {**MODELS[name], "device": cfg.device, "max-steps": warmup + repeats,
                             "eval-every": 10**9, "log-every": 1, "dropout": 0.0}  # fmt: skip
    if cfg.quick and name == "small":
        flags["batch-size"] = 4  # one step of the full batch takes ~20 s on a 2-core CPU
    meta = TokenMeta.load(token_dir)
    model_cfg, train_cfg, _ = resolve(flags, vocab_size=meta.vocab_size)
    started: list[Started] = []
    steps: list[float] = []  # seconds of each step, from the per-step tokens/s

    def on_event(event: object) -> None:
        if isinstance(event, Started):
            started.append(event)
        elif isinstance(event, Logged):
            steps.append(started[0].tokens_per_step / event.tokens_per_s)

    placement = resolve_placement(cfg.device, "auto")
    with rundir.new_run(run_dir), PeakMemory(placement.device) as peak:  # peak: CUDA only
        rundir.create(run_dir, token_dir, as_record(model_cfg, train_cfg))
        result = train(model_cfg, train_cfg, token_dir, run_dir, on_event=on_event)
    info = started[0]
    measured = steps[warmup:]
    settings = {
        "params": info.params, "device": info.device, "dtype": info.dtype,
        "threads": info.threads, "compiled": info.compiled, "batch_size": train_cfg.batch_size,
        "context": model_cfg.context, "tokens_per_step": info.tokens_per_step,
    }  # fmt: skip
    figures = [
        Figure("train", f"{name}: tokens/s", "tokens/s",
               tuple(info.tokens_per_step / s for s in measured), settings),
        Figure("train", f"{name}: step time", "ms", tuple(1000 * s for s in measured), settings),
    ]  # fmt: skip
    model, _ = load_model(result.checkpoint, placement.device)
    memory = first_batch_memory(model, train_cfg, model_cfg.context, token_dir,
                                placement.device, placement.dtype)  # fmt: skip
    activations = round(memory.activations / 2**20, 2)
    figures.append(Figure("train", f"{name}: memory of a step", "MiB", (memory.total / 2**20,),
                          {**settings, "activations_mib": activations}))  # fmt: skip
    if peak.bytes is not None:
        figures.append(Figure("train", f"{name}: peak CUDA memory", "MiB",
                              (peak.bytes / 2**20,), settings))  # fmt: skip
    if placement.device.type == "cuda" and hasattr(model, "flops_per_token"):
        gpu = torch.cuda.get_device_name(placement.device)
        rates = [info.tokens_per_step / s for s in measured]
        mfu = [model_flops_utilisation(model.flops_per_token(), r, gpu) for r in rates]
        if all(m is not None for m in mfu):
            figures.append(Figure("train", f"{name}: model FLOPs utilisation", "%",
                                  tuple(m for m in mfu if m is not None),
                                  {**settings, "gpu": gpu}))  # fmt: skip
    return figures, run_dir


def model_flops_utilisation(flops_per_token: int, tokens_per_s: float, gpu: str) -> float | None:
    """Percent of the GPU's dense bf16 peak that the model's training FLOPs reach (as
    nanoGPT's estimate_mfu counts them); None for a GPU missing from GPU_PEAK_FLOPS."""
    peak = next((v for k, v in GPU_PEAK_FLOPS.items() if k in gpu), None)
    return None if peak is None else 100 * flops_per_token * tokens_per_s / peak


def sample_figures(name: str, run_dir: Path, cfg: BenchConfig) -> list[Figure]:
    """Tokens/s with and without the KV cache, and the time to the first token, on the CPU
    engine `lmcli sample` uses by default. A recurrent model has no cache to go without: its
    state is how it reads the past (recomputing the whole history per token would be
    quadratic), so it gets the first figure only."""
    from lmcli.sampling.generate import generate
    from lmcli.sampling.open import open_model

    loaded = open_model(run_dir, device="cpu")
    repeats = 3 if cfg.quick else cfg.repeats
    count = cfg.sample_tokens
    sample_cfg = SampleConfig(max_new_tokens=count)
    prompt = [0]
    settings = {"engine": loaded.engine_name, "params": loaded.params, "new_tokens": count,
                "threads": 1}  # fmt: skip
    figures = []
    recurrent = loaded.engine.max_positions is None
    for cached in (True,) if recurrent else (True, False):

        def run(cached: bool = cached) -> object:
            return list(generate(loaded.engine, prompt, sample_cfg, use_cache=cached))

        seconds = timed(run, repeats)
        label = "with KV cache" if cached else "without cache (full forward per token)"
        label = "carrying the state" if recurrent else label
        figures.append(Figure("sample", f"{name}: tokens/s {label}", "tokens/s",
                              tuple(count / s for s in seconds), settings))  # fmt: skip

    def first_token() -> float:
        start = time.perf_counter()
        next(iter(generate(loaded.engine, prompt, sample_cfg)))
        return time.perf_counter() - start

    first_token()
    ttft = tuple(1000 * first_token() for _ in range(repeats))
    figures.append(Figure("sample", f"{name}: time to first token", "ms", ttft, settings))
    return figures
