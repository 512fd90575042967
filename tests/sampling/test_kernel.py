"""The transformer in C (decode.c, through sampling/kernel.py) computes the numpy forward."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmcli.config import ModelConfig, SampleConfig
from lmcli.sampling.generate import generate
from lmcli.sampling.kernel import Kernel, KernelForward, load_kernel
from lmcli.sampling.numpy_engine import NumpyEngine, NumpyTransformer
from tests.sampling.test_numpy_engine import CONTEXT, VARIANTS, VOCAB, pair

TRANSFORMERS = [name for name, cfg in VARIANTS.items() if cfg.model == "transformer"]


@pytest.fixture(scope="module")
def kernel(kernel_cache: Path) -> Kernel:
    with pytest.MonkeyPatch.context() as env:  # before the per-test environment exists
        env.setenv("LMCLI_CACHE_DIR", str(kernel_cache))
        found = load_kernel()
    if found.library is None:
        pytest.skip(f"no C kernel here: {found.reason}")
    return found


def engines(cfg: ModelConfig, kernel: Kernel) -> tuple[NumpyEngine, NumpyEngine]:
    """The same weights in a numpy engine and in one whose one-token steps run in C."""
    _, numpy_only = pair(cfg)
    return numpy_only, NumpyEngine(numpy_only.net, kernel.library)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_steps_in_c_give_the_numpy_logits_through_the_whole_context(
    name: str, kernel: Kernel
) -> None:
    numpy_only, with_c = engines(VARIANTS[name], kernel)
    assert with_c.in_c and not numpy_only.in_c
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, CONTEXT))  # B = 2
    expected, got = numpy_only.start(tokens[:, :3]), with_c.start(tokens[:, :3])  # a prompt
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    for t in range(3, CONTEXT):
        expected, got = numpy_only.step(tokens[:, t]), with_c.step(tokens[:, t])
        assert got.dtype == np.float32 and got.shape == (2, VOCAB)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # Both wrote the same keys and values: a numpy step after C steps reads them.
    for k_numpy, k_c in zip(numpy_only.cache.k, with_c.cache.k, strict=True):  # type: ignore[union-attr]
        np.testing.assert_allclose(k_c, k_numpy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("T", [1, 6, CONTEXT])
def test_a_forward_over_many_positions_in_c_gives_the_numpy_logits(
    name: str, T: int, kernel: Kernel
) -> None:
    # B = 5: blocks of 4 rows and a remainder in the C matrix products (and V = 40: 16 + 16 + 8).
    numpy_only, with_c = engines(VARIANTS[name], kernel)
    tokens = np.random.default_rng(T).integers(0, VOCAB, (5, T))
    np.testing.assert_allclose(
        with_c.recompute(tokens), numpy_only.recompute(tokens), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("name", ["rope-rmsnorm-gelu", "sliding-window-layers"])
@pytest.mark.parametrize("window", [None, 6])
def test_c_steps_generate_the_tokens_of_numpy_and_of_a_full_recompute(
    name: str, window: int | None, kernel: Kernel
) -> None:
    numpy_only, with_c = engines(VARIANTS[name], kernel)
    cfg = SampleConfig(
        max_new_tokens=3 * CONTEXT, temperature=1.0, top_k=None, num_samples=2,
        context_window=window, seed=3,
    )  # fmt: skip
    from_c = np.stack(list(generate(with_c, [3, 1, 4], cfg)), 1)
    assert np.array_equal(from_c, np.stack(list(generate(numpy_only, [3, 1, 4], cfg)), 1))
    full = np.stack(list(generate(with_c, [3, 1, 4], cfg, use_cache=False)), 1)
    assert np.array_equal(from_c, full)


def test_the_kernel_refuses_a_weight_of_the_wrong_shape(kernel: Kernel) -> None:
    _, engine = pair(VARIANTS["rope-rmsnorm-gelu"])
    net = engine.net
    assert isinstance(net, NumpyTransformer)
    block = net.layers[1]
    block.out.weight_t = np.zeros((block.out.weight_t.shape[0] - 1, net.cfg.width), np.float32)
    with pytest.raises(ValueError, match="shape"):
        KernelForward(kernel.library, net)  # type: ignore[arg-type]


def test_the_kernel_refuses_a_position_past_the_context(kernel: Kernel) -> None:
    _, with_c = engines(VARIANTS["rope-rmsnorm-gelu"], kernel)
    with_c.start(np.zeros((1, CONTEXT), np.int64))
    with pytest.raises(Exception, match="exceed --context"):
        with_c.step(np.zeros(1, np.int64))


def test_it_compiles_once_and_rebuilds_a_broken_file(tmp_path: Path) -> None:
    # In fresh processes: a process cannot load a changed file under a name it has loaded.
    def load_in_a_process() -> Path:
        code = "from lmcli.sampling.kernel import load_kernel; print(load_kernel().reason)"
        env = {**os.environ, "LMCLI_CACHE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return Path(done.stdout.strip())

    path = load_in_a_process()
    assert path.parent == tmp_path and path.read_bytes().startswith(b"\x7fELF")
    built = path.stat().st_mtime_ns
    assert load_in_a_process() == path and path.stat().st_mtime_ns == built  # not rebuilt
    path.write_bytes(b"not a shared library")  # as a crash mid-write might leave it
    assert load_in_a_process() == path and path.read_bytes() != b"not a shared library"
    whole = path.read_bytes()
    path.write_bytes(whole[:1000])  # truncated: loading it would die of SIGBUS
    assert load_in_a_process() == path and path.read_bytes() == whole


def test_without_a_compiler_there_is_no_kernel_and_a_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LMCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    cc = tmp_path / "no-such-cc"
    assert load_kernel() == Kernel(None, f"$CC={cc} is not a program on this machine")
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    found = load_kernel()
    assert found.library is None and found.reason.startswith("false failed")
    assert not list(tmp_path.glob("*.so"))
