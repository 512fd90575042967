"""Each view tells the truth: its numbers are the model's, computed the way the rest of lmcli
computes them (the sampler's filters, training's cross-entropy, the model's own logits)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcli.errors import InputError
from lmcli.inspect import inspect_run
from lmcli.inspect.capture import capturing
from lmcli.inspect.source import Text
from lmcli.inspect.views import attention, heads, lens, memory, nexttoken, positions, surprise
from lmcli.inspect.views.tokens import token_spans
from lmcli.models.transformer import sinusoidal_table
from lmcli.sampling.choose import choose, filtered
from lmcli.sampling.prompt import unknown_characters
from lmcli.tokenizers import CharTokenizer
from tests.inspect.conftest import CHARS, config, subject_of

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


def text_of(subject, raw: str = TEXT) -> Text:  # type: ignore[no-untyped-def]
    return Text([int(i) for i in subject.tokenizer.encode(raw)], "the prompt", raw)


def test_attention_rows_are_distributions_masked_causally_and_by_window(
    transformer_run: Path,
) -> None:
    subject = subject_of(transformer_run)
    ids = text_of(subject).ids[:16]
    captured = attention.capture(subject, ids, list(range(subject.config.layers)), 4)
    for layer, weights in captured.weights.items():
        w = weights[0]  # (H, T, T)
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-6)
        visible = attention.visible(subject, layer, len(ids))
        assert (w[:, ~visible] == 0).all()  # exactly zero: the future and outside the window
        assert (w[:, torch.ones(16, 16, dtype=torch.bool).triu(1)] == 0).all()
        window = subject.model.windows[layer]
        if window is not None:  # a local layer: nothing further back than the window
            far = torch.arange(16)[:, None] - torch.arange(16)[None, :] >= window
            assert (w[:, far] == 0).all() and visible[far].sum() == 0


def test_the_captured_path_gives_the_fused_paths_logits(transformer_run: Path) -> None:
    subject = subject_of(transformer_run)
    ids = torch.tensor([text_of(subject).ids[:16]])
    with torch.no_grad():
        fused, _ = subject.model(ids)
        with capturing(subject.model) as captured:
            naive, _ = subject.model(ids)
        after, _ = subject.model(ids)
    assert captured.weights and torch.allclose(naive, fused, atol=1e-5)
    assert torch.equal(after, fused)  # the model is back on SDPA, unchanged
    assert all(m.record is None for m in subject.model.modules() if hasattr(m, "record"))


def test_attention_view_names_masks_windows_and_shared_heads(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.inspect.conftest import TINY, fake_run

    run = fake_run(replace(TINY, kv_heads=2, window=4, window_pattern="SL"), tmp_path / "r")
    result = attention.view(subject_of(run), text_of(subject_of(run)), config(run, query=5))
    maps = [p for p in result.panels if type(p).__name__ == "Heatmap"]
    assert len(maps) == 2 * 4
    assert "local layer: a window of 4" in maps[0].note and "global" in maps[4].note
    assert "kv head 0, shared with heads 0-1 (grouped-query)" in maps[0].note
    first = maps[0].values
    assert first[3][4] is None and first[10][2] is None and first[10][8] is not None
    bars = [p for p in result.panels if type(p).__name__ == "Bars"]
    assert len(bars[0].values) == 6 and math.isclose(sum(bars[0].values), 1, abs_tol=1e-6)


def test_attention_refuses_what_does_not_exist(rope_run: Path) -> None:
    subject = subject_of(rope_run)
    for fields, flag in (
        ({"layer": 2}, "--layer 2"),
        ({"head": 9}, "--head 9"),
        ({"query": 99}, "--query 99"),
    ):
        with pytest.raises(InputError, match=flag):
            attention.view(subject, text_of(subject), config(rope_run, **fields))


def test_a_capture_too_large_is_refused_with_how_to_narrow_it(rope_run: Path) -> None:
    from lmcli.inspect import capture as module

    subject = subject_of(rope_run)
    old = module.MAX_CAPTURE_FLOATS
    module.MAX_CAPTURE_FLOATS = 100
    try:
        with pytest.raises(InputError) as info:
            attention.view(subject, text_of(subject), config(rope_run))
    finally:
        module.MAX_CAPTURE_FLOATS = old
    assert "--layer and --head" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, None, None), (0.5, 5, None), (2.0, None, 0.6), (0.8, 7, 0.9)],
)
def test_next_keeps_what_the_sampler_keeps_and_draws_match_it(
    rope_run: Path, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    subject = subject_of(rope_run)
    logits = nexttoken.next_logits(subject, text_of(subject).ids[-16:])
    probs = nexttoken.distribution(logits, temperature, top_k, top_p)
    assert math.isclose(probs.sum(), 1.0, rel_tol=1e-12)
    kept = np.isfinite(filtered(logits[None], temperature, top_k, top_p)[0])
    assert np.array_equal(probs > 0, kept)  # exactly the sampler's support
    # Seeded draws from the sampler itself follow the drawn distribution (chi-square).
    rng = np.random.default_rng(0)
    n = 20_000
    draws = choose(np.repeat(logits[None], n, axis=0), temperature, top_k, top_p, rng=rng)
    counts = np.bincount(draws, minlength=len(probs))
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(kept))
    expected = probs * n
    big = expected >= 5  # the chi-square approximation needs 5 expected per cell
    rest_obs, rest_exp = counts[~big].sum(), expected[~big].sum()
    obs = np.append(counts[big], rest_obs) if rest_exp >= 5 else counts[big]
    exp = (
        np.append(expected[big], rest_exp)
        if rest_exp >= 5
        else expected[big] * n / expected[big].sum()
    )
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof) + 10, (chi2, dof)  # far beyond p = 1e-6


def test_next_view_columns_and_greedy(rope_run: Path) -> None:
    subject = subject_of(rope_run)
    cfg = config(rope_run, temperatures=(0.0, 1.0, 3.0), top_k=3)
    result = nexttoken.view(subject, text_of(subject), cfg)
    cols = result.data["columns"]
    assert cols[0]["probs"][0] == 1.0 and cols[0]["kept"] == 1 and cols[0]["entropy_bits"] == 0
    assert cols[1]["kept"] == 3 and math.isclose(sum(cols[1]["probs"]), 1.0)
    assert cols[2]["entropy_bits"] > cols[1]["entropy_bits"]  # hotter is flatter
    assert result.panels[1].cut == 3


@pytest.mark.parametrize("text", [TEXT, "a\tb\r\nc  d", "Où est l'été 😀 日本語", "x"])
def test_token_spans_join_back_to_the_text_and_carry_encodes_ids(text: str) -> None:
    from lmcli.tokenizers.bpe import train_bpe

    bpe = train_bpe(["Où est l'été ? 😀 日本語 ROMEO: But soft, what light " * 50], 300)
    for tokenizer in (bpe, CharTokenizer(CHARS + "\tOùéè'日本語😀\r")):
        spans = token_spans(tokenizer, text)
        assert "".join(s.text for s in spans) == text
        missing = set(unknown_characters(tokenizer, text))
        known = "".join(ch for ch in text if ch not in missing)
        assert [i for s in spans for i in s.ids] == [int(i) for i in tokenizer.encode(known)]
    multi = [s for s in token_spans(bpe, "😀") if len(s.ids) > 1]
    assert multi and multi[0].text == "😀" and multi[0].bytes == 4  # one span, several ids


def test_token_spans_show_unknown_characters_without_ids() -> None:
    spans = token_spans(CharTokenizer(CHARS), "Ωa")
    assert spans[0].text == "Ω" and spans[0].ids == [] and spans[1].ids != []


def test_surprise_mean_is_the_models_cross_entropy(any_run: Path) -> None:
    subject = subject_of(any_run)
    ids = text_of(subject).ids[:17]
    result = surprise.surprisal(subject, ids)
    with torch.no_grad():
        _, loss = subject.model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    assert math.isclose(result.cross_entropy, float(loss), rel_tol=1e-5)
    assert math.isclose(np.mean(result.bits) * math.log(2), float(loss), rel_tol=1e-5)
    size = len(subject.tokenizer.decode_bytes(ids[1:]))
    assert math.isclose(result.bits_per_byte, sum(result.bits) / size, rel_tol=1e-9)


def test_surprise_compare_colours_the_difference(rope_run: Path, lstm_run: Path) -> None:
    subject = subject_of(rope_run)
    result = surprise.view(subject, text_of(subject), config(rope_run, compare=lstm_run))
    diff = result.data["compare"]["difference"]
    assert np.allclose(diff, np.array(result.data["compare"]["bits"]) - result.data["bits"])


def test_memory_is_exactly_zero_at_and_past_the_context(any_run: Path) -> None:
    subject = subject_of(any_run)
    context = subject.config.context
    rng = np.random.default_rng(0)
    windows = torch.from_numpy(rng.integers(0, len(CHARS), size=(3, 2 * context + 1)))
    ds = memory.distances(2 * context)
    kl = memory.kl_by_distance(subject, windows, ds, seed=0)
    assert kl[0] > 0
    for d, value in zip(ds, kl, strict=True):
        if subject.is_transformer and d >= context:
            assert value == 0.0, (d, value)
    if not subject.is_transformer:
        assert kl[ds.index(context)] > 0  # a recurrent state reaches past the training context


def test_the_lenss_last_layer_is_the_models_output(transformer_run: Path) -> None:
    subject = subject_of(transformer_run)
    probs, logits = lens.lens_probs(subject.model, text_of(subject).ids[:16])
    assert probs.shape[0] == subject.config.layers + 1
    assert torch.allclose(probs[-1], torch.softmax(logits.double(), -1), atol=1e-12)
    top = probs.argmax(-1)
    settled = lens.settles(top)
    for t, s in enumerate(settled):
        assert (top[s:, t] == top[-1, t]).all() and (s == 0 or top[s - 1, t] != top[-1, t])


def test_sinusoidal_similarity_depends_only_on_distance() -> None:
    sim = positions.similarity(sinusoidal_table(32, 16))
    for d in range(32):
        diagonal = torch.diagonal(sim, offset=d)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5)


def test_attention_by_distance_rows_sum_to_one(transformer_run: Path) -> None:
    subject = subject_of(transformer_run)
    result = positions.view(subject, text_of(subject), config(transformer_run))
    rows = result.data["attention_by_distance"]
    assert len(rows) == subject.config.layers * subject.config.heads
    assert all(math.isclose(sum(r), 1.0, abs_tol=1e-5) for r in rows)


def test_head_scores_read_the_positions_they_name() -> None:
    n = 5
    T = 2 * n
    for name, key in (
        ("previous-token", lambda i: i - 1),
        ("first-token", lambda i: 0),
        ("duplicate-token", lambda i: i - n),
        ("induction", lambda i: i - n + 1),
    ):
        weights = torch.zeros(1, 1, T, T)
        for i in range(T):
            weights[0, 0, i, max(0, key(i))] = 1.0
        assert float(heads.head_scores(weights, n)[name][0]) == pytest.approx(1.0), name


def test_heads_probe_repeats_and_both_kinds_of_model_get_the_loss(
    rope_run: Path, lstm_run: Path
) -> None:
    subject = subject_of(rope_run)
    ids = heads.probe(subject, seed=3)
    n = ids.shape[1] // 2
    assert torch.equal(ids[:, :n], ids[:, n:]) and n == 8
    for run in (rope_run, lstm_run):
        result = heads.view(subject_of(run), text_of(subject_of(run)), config(run))
        assert result.data["loss_first_copy"] > 0 and result.data["loss_second_copy"] > 0
    assert "induction" not in result.data  # the LSTM has no heads


def test_recurrent_runs_get_their_views_and_a_refusal_for_the_rest(lstm_run: Path) -> None:
    for view in ("attention", "lens", "positions"):
        with pytest.raises(InputError) as info:
            inspect_run(config(lstm_run, view=view, prompt="ROMEO:"))
        assert "LSTM" in info.value.message and "memory" in (info.value.hint or "")
    tour = inspect_run(config(lstm_run, prompt="ROMEO: But"))
    assert [v.view for v in tour.views] == ["tokens", "next"]


def test_a_text_longer_than_the_context_is_cut_and_says_so(rope_run: Path) -> None:
    result = inspect_run(config(rope_run, view="attention", prompt=TEXT, layer=0, head=0))
    assert any("the last 16 are shown" in n for n in result.views[0].notes)


def test_unknown_characters_are_refused_as_sample_refuses_them(rope_run: Path) -> None:
    with pytest.raises(InputError, match="characters not in the char vocabulary"):
        inspect_run(config(rope_run, view="next", prompt="Ωmega"))
    kept = inspect_run(config(rope_run, view="next", prompt="Ωmega", drop_unknown=True))
    assert kept.views[0].data["context_tokens"] == 4
    shown = inspect_run(config(rope_run, view="tokens", prompt="Ωmega"))
    assert shown.views[0].data["unknown"] == 1


def test_a_long_texts_heatmap_rows_still_sum_to_one(rope_run: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(attention, "MAX_SHOWN", 6)
    subject = subject_of(rope_run)
    result = attention.view(subject, text_of(subject), config(rope_run, layer=0, head=1))
    heatmap = result.panels[0]
    assert heatmap.cols[0] == "0-9 (all)" and len(heatmap.cols) == 7 and len(heatmap.rows) == 6
    for row in heatmap.values:
        assert math.isclose(sum(v for v in row if v is not None), 1.0, abs_tol=1e-6)
