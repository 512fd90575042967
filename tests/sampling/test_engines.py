"""Every engine against the torch model, over the one list of variants (tests/variants.py): the
logits of a prompt, of cached steps and of a full recompute within 1e-4, and the same tokens
for a seed; plus what decode.c must refuse, and how it is built."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcli.config import ModelConfig, SampleConfig
from lmcli.models import LanguageModel, build_model
from lmcli.sampling.engines import open_engine
from lmcli.sampling.engines.build import Library, build
from lmcli.sampling.engines.c_transformer import (
    CTransformer,
    EngineUnavailable,
    check_layout,
    declare,
    expected_layout,
)
from lmcli.sampling.engines.torch_engine import TorchEngine
from lmcli.sampling.generate import Engine, generate
from lmcli.weights import Weights, read_weights, save_weights

from ..variants import CONTEXT, TRANSFORMERS, VARIANTS, VOCAB


@pytest.fixture(scope="module")
def library(kernel_cache: Path) -> Library:
    with pytest.MonkeyPatch.context() as env:  # before the per-test environment exists
        env.setenv("LMCLI_CACHE_DIR", str(kernel_cache))
        found = build()
    if found.handle is None:
        pytest.fail(f"no C compiler here ({found.reason}): CI and this machine have one")
    return found


def trained_like(cfg: ModelConfig, tmp_path: Path, seed: int = 0) -> tuple[LanguageModel, Weights]:
    """A torch model with spread-out logits (weights x 4, as training leaves them far from
    init) and its weights file, read back as the CPU engines read it."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    path = tmp_path / f"{seed}.safetensors"
    save_weights(path, model.state_dict(), cfg, step=0)
    return model, read_weights(path)


def cpu_engine(weights: Weights, library: Library) -> Engine:
    if weights.config.model == "transformer":
        assert library.handle is not None
        return CTransformer(library.handle, weights)
    return open_engine(weights, "cpu", engine="numpy")[0]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_prompt_steps_and_recompute_give_the_torch_logits(
    name: str, tmp_path: Path, library: Library
) -> None:
    model, weights = trained_like(VARIANTS[name], tmp_path)
    engine = cpu_engine(weights, library)
    idx = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)[0].numpy()  # (B, T, V)
    got = [engine.start(idx[:, :5].numpy())]  # a prompt of 5 in one forward
    got += [engine.step(idx[:, t].numpy()) for t in range(5, CONTEXT)]  # then one at a time
    for t, logits in zip(range(4, CONTEXT), got, strict=True):
        assert logits.dtype == np.float32 and logits.shape == (2, VOCAB)
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(engine.recompute(idx.numpy()), full[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("T", [1, 6, CONTEXT])
def test_a_forward_over_many_rows_gives_the_torch_logits(
    name: str, T: int, tmp_path: Path, library: Library
) -> None:
    """B = 7: decode.c's register blocks of 6 rows and a remainder (V = 40: not a multiple of 16,
    so the head takes the other path)."""
    model, weights = trained_like(VARIANTS[name], tmp_path)
    tokens = np.random.default_rng(T).integers(0, VOCAB, (7, T))
    with torch.no_grad():
        expected = model(torch.from_numpy(tokens))[0][:, -1].numpy()
    got = cpu_engine(weights, library).recompute(tokens)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# Shapes the variants (head size 8, context 16) leave out of decode.c's kernels: scores in
# blocks of 32 positions, then of 8, then one at a time; head sizes that are not a multiple of
# 8 (the values' scalar channels); outputs in blocks of 64 and of 16, and a qkv of 108 outputs
# (not a multiple of 16: the dot-product path).
LONG = ModelConfig(vocab_size=VOCAB, layers=2, width=48, heads=2, context=80)
LONG_SHAPES = {
    "head-size-24-context-80": LONG,
    "head-size-12-multi-query-context-77": replace(LONG, width=36, heads=3, kv_heads=1, context=77),
    "head-size-20-window-37": replace(LONG, width=80, heads=4, window=37, window_pattern="SL"),
}


@pytest.mark.parametrize("name", list(LONG_SHAPES))
def test_long_contexts_and_odd_head_sizes_give_the_torch_logits(
    name: str, tmp_path: Path, library: Library
) -> None:
    cfg = LONG_SHAPES[name]
    model, weights = trained_like(cfg, tmp_path)
    engine = cpu_engine(weights, library)
    idx = torch.randint(0, VOCAB, (2, cfg.context), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)[0].numpy()  # (B, T, V)
    prompt = cfg.context - 41  # steps from there cross every block boundary of the scores
    got = [engine.start(idx[:, :prompt].numpy())]
    got += [engine.step(idx[:, t].numpy()) for t in range(prompt, cfg.context)]
    for t, logits in zip(range(prompt - 1, cfg.context), got, strict=True):
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(engine.recompute(idx.numpy()), full[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["rope-rmsnorm-gelu", "sliding-window-layers", "lstm"])
@pytest.mark.parametrize("window", [None, 7])
def test_each_engine_gives_the_tokens_of_torch_and_of_a_full_recompute(
    name: str, window: int | None, tmp_path: Path, library: Library
) -> None:
    model, weights = trained_like(VARIANTS[name], tmp_path)
    cfg = SampleConfig(max_new_tokens=3 * CONTEXT, temperature=1.0, top_k=None, num_samples=2,
                       context_window=window, seed=3)  # fmt: skip
    prompt = [3, 1, 4]
    engine = cpu_engine(weights, library)
    tokens = np.stack(list(generate(engine, prompt, cfg)), 1)
    assert np.array_equal(tokens, np.stack(list(generate(engine, prompt, cfg, use_cache=False)), 1))
    assert np.array_equal(tokens, np.stack(list(generate(TorchEngine(model), prompt, cfg)), 1))


def test_weights_files_load_with_safetensors_numpy_and_torch(tmp_path: Path) -> None:
    import safetensors.numpy
    import safetensors.torch

    for name, cfg in VARIANTS.items():
        model, weights = trained_like(cfg, tmp_path)
        arrays = safetensors.numpy.load_file(str(weights.path))
        assert set(arrays) == set(weights.arrays), name
        if cfg.tie:  # stored once, under the embedding's name
            assert "head.weight" not in arrays
        fresh = build_model(cfg)
        safetensors.torch.load_model(fresh, str(weights.path), strict=True)
        for key, tensor in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], tensor), (name, key)
        embedding = "wte.weight" if cfg.model == "transformer" else "embed.weight"
        assert isinstance(weights.arrays[embedding].base, np.memmap | np.ndarray)  # a view


def test_decode_c_checks_every_weight_by_name_and_shape(tmp_path: Path, library: Library) -> None:
    """Weights that reach decode.c past lmcli.weights' checks (e.g. edited in memory) are
    refused there too: a wrong shape never becomes an out-of-bounds read."""
    assert library.handle is not None
    _, weights = trained_like(VARIANTS["rope-rmsnorm-gelu"], tmp_path)
    short = dict(weights.arrays)
    short["blocks.1.mlp.proj.weight"] = short["blocks.1.mlp.proj.weight"][:, :-1].copy()
    with pytest.raises(
        EngineUnavailable, match=r"blocks\.1\.mlp\.proj\.weight is not of the shape"
    ):
        CTransformer(library.handle, Weights(weights.path, weights.config, short, {}))
    del short["blocks.1.mlp.proj.weight"]
    with pytest.raises(EngineUnavailable, match=r"the weights lack blocks\.1\.mlp\.proj\.weight"):
        CTransformer(library.handle, Weights(weights.path, weights.config, short, {}))


def test_decode_c_refuses_positions_past_the_context_and_foreign_tokens(
    tmp_path: Path, library: Library
) -> None:
    _, weights = trained_like(VARIANTS["rope-rmsnorm-gelu"], tmp_path)
    engine = cpu_engine(weights, library)
    engine.start(np.zeros((1, CONTEXT), np.int64))
    with pytest.raises(Exception, match=f"more positions than --context {CONTEXT}"):
        engine.step(np.zeros(1, np.int64))
    with pytest.raises(IndexError, match="outside the vocabulary"):
        engine.start(np.full((1, 2), VOCAB, np.int64))


def test_the_structs_of_the_binding_are_decode_c_s(library: Library) -> None:
    assert library.handle is not None
    declare(library.handle)
    check_layout(library.handle)  # raises if sizes or offsets differ
    out = (__import__("ctypes").c_int64 * 32)()
    assert list(out[: library.handle.lm_layout(out)]) == expected_layout()


def test_it_compiles_once_and_rebuilds_a_broken_file(tmp_path: Path) -> None:
    # In fresh processes: a process cannot load a changed file under a name it has loaded.
    def build_in_a_process() -> Path:
        code = "from lmcli.sampling.engines.build import build; print(build().reason)"
        env = {**os.environ, "LMCLI_CACHE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return Path(done.stdout.strip())

    path = build_in_a_process()
    assert path.parent == tmp_path and path.read_bytes().startswith(b"\x7fELF")
    built = path.stat().st_mtime_ns
    assert build_in_a_process() == path and path.stat().st_mtime_ns == built  # not rebuilt
    path.write_bytes(b"not a shared library")  # as a crash mid-write might leave it
    assert build_in_a_process() == path and path.read_bytes() != b"not a shared library"
    whole = path.read_bytes()
    path.write_bytes(whole[:1000])  # truncated: loading it would die of SIGBUS
    assert build_in_a_process() == path and path.read_bytes() == whole


def test_without_a_compiler_torch_runs_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LMCLI_CACHE_DIR", str(tmp_path))
    cc = tmp_path / "no-such-cc"
    monkeypatch.setenv("CC", str(cc))
    assert build() == Library(None, f"$CC={cc} is not a program on this machine")
    model, weights = trained_like(VARIANTS["rope-rmsnorm-gelu"], tmp_path)
    engine, name = open_engine(weights, "cpu")
    assert isinstance(engine, TorchEngine)
    assert name == f"torch; no C engine: $CC={cc} is not a program on this machine"
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    found = build()
    assert found.handle is None and found.reason.startswith("false failed")
    tokens = np.array([[3, 1, 4]])
    with torch.no_grad():
        expected = model(torch.from_numpy(tokens))[0][:, -1].numpy()
    np.testing.assert_allclose(engine.start(tokens), expected, rtol=1e-5, atol=1e-5)


def test_the_c_engine_never_imports_torch(tmp_path: Path, kernel_cache: Path) -> None:
    _, weights = trained_like(VARIANTS["sliding-window-layers"], tmp_path)
    code = f"""
import sys
from pathlib import Path
from lmcli.sampling.engines import open_engine
from lmcli.weights import read_weights
engine, name = open_engine(read_weights(Path({str(weights.path)!r})), "cpu")
engine.start(__import__("numpy").zeros((1, 3), "int64"))
assert name == "C", name
assert "torch" not in sys.modules, "torch was imported"
"""
    env = {**os.environ, "LMCLI_CACHE_DIR": str(kernel_cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
