"""Generation: greedy is argmax, seeds repeat, and the cache changes nothing but the speed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lmcli.config import ModelConfig, SampleConfig
from lmcli.errors import ConfigError
from lmcli.models import LanguageModel, build_model
from lmcli.sampling.generate import generate

VOCAB = 40
CONTEXT = 16
TINY = ModelConfig(vocab_size=VOCAB, layers=2, width=32, heads=4, context=CONTEXT)
MODELS = {
    "global": TINY,
    "sliding-window-layers": replace(TINY, window=5, window_pattern="SL"),
    "grouped-query-learned-post-norm": replace(
        TINY, kv_heads=2, pos="learned", norm="layernorm", norm_placement="post"
    ),
    "sinusoidal-swiglu": replace(TINY, pos="sinusoidal", mlp="swiglu"),
    "lstm": ModelConfig(model="lstm", vocab_size=VOCAB, layers=2, width=32),
    "gru": ModelConfig(model="gru", vocab_size=VOCAB, layers=1, width=32),
}
PROMPT = [3, 1, 4, 1, 5]


def build(cfg: ModelConfig, seed: int = 0) -> LanguageModel:
    """An eval-mode float64 model with weights scaled up: its logits are spread out, so that the
    rounding differences between a cached step and a full forward (~1e-15) cannot flip a draw."""
    torch.manual_seed(seed)
    model = build_model(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model


def run(
    model: LanguageModel, prompt: list[int] = PROMPT, use_cache: bool = True, **settings
) -> torch.Tensor:
    """The new tokens (B, N) of one generation; settings default to plain sampling at T = 1."""
    cfg = SampleConfig(**{"max_new_tokens": 20, "temperature": 1.0, "top_k": None, **settings})
    return torch.from_numpy(np.stack(list(generate(model, prompt, cfg, use_cache=use_cache)), 1))


def run_both(
    model: LanguageModel, prompt: list[int] = PROMPT, **settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of the cached path and of the full recompute, for the same settings."""
    return run(model, prompt, True, **settings), run(model, prompt, False, **settings)


def test_greedy_is_the_argmax_of_a_full_forward() -> None:
    model = build(TINY)
    tokens = run(model, temperature=0, max_new_tokens=10)[0].tolist()
    seq = list(PROMPT)
    with torch.no_grad():
        for token in tokens:
            logits = model(torch.tensor([seq]))[0][0, -1]
            assert token == int(logits.argmax())
            seq.append(token)


@pytest.mark.parametrize("name", ["global", "gru"])
def test_top_k_one_and_a_tiny_top_p_are_greedy(name: str) -> None:
    model = build(MODELS[name])
    greedy = run(model, temperature=0, num_samples=2)
    assert torch.equal(run(model, top_k=1, num_samples=2), greedy)
    assert torch.equal(run(model, top_p=1e-9, temperature=1.5, num_samples=2), greedy)


def test_seeded_runs_repeat_and_a_shorter_run_is_a_prefix() -> None:
    model = build(TINY)
    a = run(model, seed=7, num_samples=3, max_new_tokens=30)
    assert torch.equal(a, run(model, seed=7, num_samples=3, max_new_tokens=30))
    assert not torch.equal(a, run(model, seed=8, num_samples=3, max_new_tokens=30))
    assert torch.equal(a[:, :10], run(model, seed=7, num_samples=3, max_new_tokens=10))
    assert not torch.equal(a[0], a[1])  # the samples of a batch differ


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("new_tokens", [CONTEXT // 2, 3 * CONTEXT])
def test_the_cache_gives_the_tokens_of_a_full_recompute(
    name: str, window: int | None, new_tokens: int
) -> None:
    """Short of the context, and at three times it, where the window slides."""
    model = build(MODELS[name])
    for temperature in (0.0, 1.0):
        cached, full = run_both(
            model,
            context_window=window,
            max_new_tokens=new_tokens,
            temperature=temperature,
            num_samples=2,
        )
        assert torch.equal(cached, full)


def test_a_prompt_longer_than_the_window_keeps_its_newest_tokens() -> None:
    model = build(TINY)
    prompt = [i % VOCAB for i in range(40)]
    cached, full = run_both(model, prompt, max_new_tokens=30)
    assert torch.equal(cached, full)
    # Only the newest W - W//4 prompt tokens count: an older change alters nothing.
    changed = [7, *prompt[1:]]
    assert torch.equal(run(model, changed, max_new_tokens=30), cached)


class Spy(torch.nn.Module):
    """Wraps a model and records the token ids of every forward."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model
        self.calls: list[list[int]] = []

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    @property
    def max_positions(self) -> int | None:
        return self.model.max_positions

    def new_cache(self, batch_size: int):
        return self.model.new_cache(batch_size)

    def forward(self, idx: torch.Tensor, cache=None):
        self.calls.append(idx[0].tolist())
        return self.model(idx, cache=cache)


@pytest.mark.parametrize("name", ["global", "lstm"])
def test_the_window_slides_by_a_quarter(name: str) -> None:
    """W = 8: once 9 tokens would be seen, the newest 6 remain; the cached path refills from
    exactly the tokens the full recompute sees, and steps one token at a time in between."""
    spy = Spy(build(MODELS[name]))
    cfg = SampleConfig(max_new_tokens=12, context_window=8, temperature=0)
    prompt = [1, 2, 3]
    tokens = np.stack(list(generate(spy, prompt, cfg, use_cache=False)), 1)[0].tolist()
    seq = prompt + tokens
    lengths = [len(c) for c in spy.calls]
    assert lengths == [3, 4, 5, 6, 7, 8, 6, 7, 8, 6, 7, 8]
    assert spy.calls[6] == seq[3:9]  # 9 tokens would be seen: the newest 6 remain
    full_calls = spy.calls
    spy.calls = []
    list(generate(spy, prompt, cfg))
    assert [len(c) for c in spy.calls] == [3, 1, 1, 1, 1, 1, 6, 1, 1, 6, 1, 1]
    refills = [c for c in spy.calls if len(c) == 6]
    assert refills == [full_calls[6], full_calls[9]] == [seq[3:9], seq[6:12]]


def test_a_recurrent_model_without_a_window_carries_its_state() -> None:
    spy = Spy(build(MODELS["gru"]))
    list(generate(spy, PROMPT, SampleConfig(max_new_tokens=3 * CONTEXT, temperature=0)))
    assert [len(c) for c in spy.calls] == [len(PROMPT)] + [1] * (3 * CONTEXT - 1)


def test_generation_leaves_inference_mode_off_between_steps() -> None:
    steps = generate(build(TINY), PROMPT, SampleConfig(max_new_tokens=5))
    next(steps)
    assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("prompt", "settings", "message"),
    [
        ([], {}, "the prompt is empty"),
        (PROMPT, {"context_window": CONTEXT + 1}, "--context-window 17 is larger than the model"),
        (PROMPT, {"context_window": 0}, "--context-window must be at least 1"),
        (PROMPT, {"temperature": -0.5}, "--temperature must be at least 0"),
        (PROMPT, {"top_k": 0}, "--top-k must be at least 1"),
        (PROMPT, {"top_p": 1.5}, "--top-p must be in (0, 1]"),
        (PROMPT, {"max_new_tokens": 0}, "--max-new-tokens must be at least 1"),
        (PROMPT, {"num_samples": 0}, "--num-samples must be at least 1"),
    ],
)
def test_bad_settings_fail_before_any_work(prompt: list[int], settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        generate(build(TINY), prompt, SampleConfig(**settings))
    assert message in caught.value.message


def test_any_window_fits_a_recurrent_model() -> None:
    model = build(MODELS["lstm"])
    cached, full = run_both(model, context_window=1000, max_new_tokens=10)
    assert torch.equal(cached, full)
