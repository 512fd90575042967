"""`lmcli sample`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from lmcli.cli.options import option
from lmcli.cli.render import note, print_json, user_errors
from lmcli.cli.signals import stop_at_once
from lmcli.config import SampleConfig
from lmcli.errors import ConfigError
from lmcli.sampling.stop import parse_stop

DEFAULTS = SampleConfig()
SHOWN = True  # sample's defaults are SampleConfig's own: typer shows them
_PANEL_OUTPUT = "Output"


def sample(
    run_dir_or_checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A run directory from lmcli train (its best.safetensors, else "
            "last.safetensors) or a weights file beside its tokenizer.json.",
            show_default=False,
        ),
    ],
    prompt: Annotated[
        str | None, option(r"Text to continue. \[default: a newline]", show_default=False)
    ] = None,
    prompt_file: Annotated[
        Path | None, option("Read the prompt from this UTF-8 file.", show_default=False)
    ] = None,
    max_new_tokens: Annotated[int, option("Tokens to generate per sample.", show_default=SHOWN)] = (
        DEFAULTS.max_new_tokens
    ),
    temperature: Annotated[
        float,
        option(
            "Softmax temperature; 0 is greedy (always the most likely token).", show_default=SHOWN
        ),
    ] = DEFAULTS.temperature,
    top_k: Annotated[
        int | None,
        option(
            "Draw from the K most likely tokens only (K ≥ the vocabulary: all of them).",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.top_k,
    top_p: Annotated[
        float | None,
        option(
            "Draw from the smallest set of tokens whose probabilities reach P (nucleus "
            r"sampling). \[default: off]",
            show_default=False,
        ),
    ] = DEFAULTS.top_p,
    context_window: Annotated[
        int | None,
        option(
            "Condition on the W most recent tokens at most (W ≤ the model's context). Past W "
            "tokens the oldest are dropped so that the newest W - W//4 remain, and the cache or "
            "state is refilled from them: the model always sees between 3W/4 and W recent "
            "tokens (sliding by one token would cost a full forward per token, ~W times "
            r"slower). \[default: the context; unbounded for an LSTM/GRU]",
            show_default=False,
        ),
    ] = DEFAULTS.context_window,
    num_samples: Annotated[
        int, option("Samples, generated together as one batch.", show_default=SHOWN)
    ] = (DEFAULTS.num_samples),
    seed: Annotated[
        int, option("Random seed: the same seed repeats the same samples.", show_default=SHOWN)
    ] = (DEFAULTS.seed),
    device: Annotated[
        str,
        option(
            "cpu (the C engine, or numpy for an LSTM/GRU: no torch, the fastest for small "
            "models), auto, cuda, cuda:N or mps (the torch models).",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.device,
    threads: Annotated[
        int,
        option(
            "CPU threads (one suits a small model: a token is a chain of tiny operations).",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.threads,
    drop_unknown: Annotated[
        bool,
        option(
            "Drop prompt characters a char model has never seen, instead of refusing.",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.drop_unknown,
    stop: Annotated[
        list[str] | None,
        option(
            "End a sample where its text contains STR (not printed), wherever the tokens "
            "split it; repeat for several. \\n and \\t are a newline and a tab.",
            show_default=False,
        ),
    ] = None,
    stop_at_eot: Annotated[
        bool,
        option(
            "End a sample at <|endoftext|> (models trained on a folder of documents).",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.stop_at_eot,
    repetition_penalty: Annotated[
        float,
        option(
            "Above 1, tokens already in the text become less likely (a positive logit is "
            "divided by it, a negative one multiplied). 1 is off.",
            show_default=SHOWN,
        ),
    ] = DEFAULTS.repetition_penalty,
    stream: Annotated[
        bool | None,
        option(
            "Print text as it is generated (the first sample, when there are several). "
            r"\[default: on when stdout is a terminal]",
            show_default=False,
            panel=_PANEL_OUTPUT,
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the samples, settings and timings as one JSON object.",
            rich_help_panel=_PANEL_OUTPUT,
        ),
    ] = False,
) -> None:
    """Generate text from a trained model: samples on stdout, notes on stderr."""
    with user_errors(), stop_at_once():
        if stream and json_out:
            raise ConfigError("--stream and --json cannot be combined: --json prints one object")
        cfg = SampleConfig(
            prompt=_prompt_text(prompt, prompt_file),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            context_window=context_window,
            num_samples=num_samples,
            seed=seed,
            device=device,
            threads=threads,
            drop_unknown=drop_unknown,
            stop=tuple(parse_stop(s) for s in stop or ()),
            stop_at_eot=stop_at_eot,
            repetition_penalty=repetition_penalty,
        )
        cfg.validate()
        streaming = not json_out and (stream if stream is not None else sys.stdout.isatty())
        _run(run_dir_or_checkpoint, cfg, streaming, json_out)


def _prompt_text(prompt: str | None, prompt_file: Path | None) -> str:
    if prompt is not None and prompt_file is not None:
        raise ConfigError("give --prompt or --prompt-file, not both")
    if prompt_file is None:
        return DEFAULTS.prompt if prompt is None else prompt
    from lmcli.corpus.text import read_text_file

    return read_text_file(prompt_file, "prompt file")


def _run(target: Path, cfg: SampleConfig, streaming: bool, json_out: bool) -> None:
    # Before numpy is imported: its BLAS reads the thread count once, at import.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(cfg.threads))
    # The library is imported only once the arguments are known to be good; on the CPU it never
    # imports torch (the C and numpy engines), which saves seconds of startup.
    from lmcli.sampling.generate import generate, resolve_window
    from lmcli.sampling.open import open_model
    from lmcli.sampling.prompt import encode_prompt, unknown_characters

    start = time.perf_counter()
    loaded = open_model(target, cfg.device)
    if "torch" in sys.modules:
        from lmcli.devices import configure_threads

        configure_threads(cfg.threads)
    eot = loaded.tokenizer.eot_id
    if cfg.stop_at_eot and eot is None:
        raise ConfigError(
            f"--stop-at-eot: the tokenizer of {target} has no <|endoftext|> token",
            hint="only models trained on a folder of documents (or a pretrained encoding) "
            "have one; use --stop STR",
        )
    dropped = unknown_characters(loaded.tokenizer, cfg.prompt) if cfg.drop_unknown else []
    prompt_ids = encode_prompt(loaded.tokenizer, cfg.prompt, cfg.drop_unknown)
    steps = generate(loaded.engine, prompt_ids, cfg)  # checks window and prompt before any work
    step = "" if loaded.step is None else f"step {loaded.step}, "
    if loaded.note:
        note(f"note: {loaded.note}")
    note(f"{loaded.weights} ({step}{loaded.params:,} parameters) on {loaded.device} "
         f"({loaded.engine_name})")  # fmt: skip
    if dropped:
        note(f"dropped from the prompt: {', '.join(repr(ch) for ch in dropped)}")
    prompt_text = loaded.tokenizer.decode(prompt_ids)
    load_seconds = time.perf_counter() - start
    run = _generate(steps, loaded.tokenizer, prompt_text, cfg, streaming,
                    eot if cfg.stop_at_eot else None)  # fmt: skip
    if json_out:
        shown = ("max_new_tokens", "temperature", "top_k", "top_p", "num_samples", "seed",
                 "threads", "repetition_penalty", "stop_at_eot")  # fmt: skip
        settings: dict[str, Any] = {k: getattr(cfg, k) for k in shown}
        settings.update(context_window=resolve_window(loaded.engine, cfg.context_window),
                        device=str(loaded.device), dropped_from_prompt=dropped,
                        stop=list(cfg.stop))  # fmt: skip
        print_json({"samples": run.samples, "prompt": prompt_text, "settings": settings,
                    "checkpoint": str(loaded.weights), "step": loaded.step,
                    "params": loaded.params, "engine": loaded.engine_name, "tokens": run.count,
                    "tokens_per_sample": run.per_sample, "stopped": run.stopped,
                    "tokens_per_s": run.count / run.seconds,
                    "time_to_first_token_s": run.first_token_seconds, "seconds": run.seconds,
                    "load_seconds": load_seconds})  # fmt: skip
        return
    header = _headers(cfg.num_samples)
    for i, sample_text in enumerate(run.samples):
        if i > 0 or not streaming:
            _write(_ending(header[i] + prompt_text + sample_text, sample_text))


@dataclass(frozen=True)
class _Generated:
    samples: list[str]
    count: int  # tokens generated, over all samples
    per_sample: list[int]
    stopped: list[bool]  # ended by a stop string or <|endoftext|>
    seconds: float
    first_token_seconds: float


def _generate(
    steps: Iterator[Any],
    tokenizer: Any,
    prompt_text: str,
    cfg: SampleConfig,
    streaming: bool,
    eot: int | None,
) -> _Generated:
    """Every sample's text, each ended at a stop string or <|endoftext|> if one comes; with
    `streaming`, the first one is printed as it comes, never past its end."""
    from lmcli.sampling.stop import Samples

    if streaming:
        _write(_headers(cfg.num_samples)[0] + prompt_text)
    samples = Samples(tokenizer, cfg.num_samples, cfg.stop, eot, streaming)
    shown: list[str] = []
    start = time.perf_counter()
    first_token_seconds = 0.0
    for n, token in enumerate(steps):
        if n == 0:
            first_token_seconds = time.perf_counter() - start
        text = samples.feed(token)
        if streaming and text:
            _write(text)
            shown.append(text)
        if samples.done:
            break  # every sample has ended: no more tokens are computed
    seconds = time.perf_counter() - start
    stopped = list(samples.ended)
    texts = samples.finish()
    count = sum(samples.tokens)  # known once finished
    note(f"{count:,} tokens in {seconds:.2f} s: {count / seconds:,.0f} tokens/s; first token "
         f"after {first_token_seconds * 1000:.0f} ms")  # fmt: skip
    if streaming:
        _write(_ending(texts[0][len("".join(shown)) :], texts[0]))
    return _Generated(texts, count, samples.tokens, stopped, seconds, first_token_seconds)


def _headers(count: int) -> list[str]:
    """A line before each sample when there are several; nothing for one."""
    if count == 1:
        return [""]
    return [f"--- sample {i + 1} of {count} ---\n" for i in range(count)]


def _ending(text: str, sample_text: str) -> str:
    """`text` and a newline, unless the sample already ends its last line."""
    return text if sample_text.endswith("\n") else text + "\n"


def _write(text: str) -> None:
    """Raw text on stdout at once: no markup, no wrapping, no ANSI stripping."""
    sys.stdout.write(text)
    sys.stdout.flush()
