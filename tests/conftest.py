"""Shared fixtures: the Tiny Shakespeare file from ../shared, isolated caches, tiny corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def pytest_configure(config: pytest.Config) -> None:
    # Two OpenMP threads spin-wait against each other on a busy 2-core machine; one is faster.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the compiled decode.c of the whole session: it compiles once."""
    return tmp_path_factory.mktemp("lmcli-cache")


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, kernel_cache: Path
):
    """No test reads or writes the user's caches."""
    monkeypatch.setenv("LMCLI_CACHE_DIR", str(kernel_cache))
    monkeypatch.setenv("LMCLI_DATA_DIR", str(tmp_path_factory.mktemp("lmcli-data")))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken-cache")))


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.fail(f"missing {SHAKESPEARE}: tests expect ../shared/data beside the checkout")
    return SHAKESPEARE


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_path: Path) -> str:
    return shakespeare_path.read_text(encoding="utf-8")
