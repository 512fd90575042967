"""The torch-free table of a model's weights is the torch model's state dict."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lmcli.errors import InputError
from lmcli.models import build_model
from lmcli.weights import (
    check_shapes,
    expected_shapes,
    parameter_count,
    save_weights,
    table_bytes,
)

from .variants import VARIANTS


@pytest.mark.parametrize("name", list(VARIANTS))
def test_expected_shapes_are_the_state_dict(name: str) -> None:
    cfg = VARIANTS[name]
    state = build_model(cfg).state_dict()
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in state.items()}
    model = build_model(cfg)
    assert parameter_count(cfg) == model.num_params()
    assert table_bytes(cfg) == sum(b.numel() * b.element_size() for b in model.buffers())


def test_a_config_that_contradicts_its_weights_is_refused() -> None:
    cfg = VARIANTS["grouped-query-learned-layernorm-post-bias"]
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    check_shapes(cfg, shapes, "ckpt")
    with pytest.raises(InputError, match=r"blocks\.0\.attn\.qkv\.weight is"):
        check_shapes(replace(cfg, kv_heads=4), shapes, "ckpt")
    with pytest.raises(InputError, match=r"lacks the weight 'blocks\.2"):
        check_shapes(replace(cfg, layers=3), shapes, "ckpt")
    with pytest.raises(InputError, match="has no place for"):
        check_shapes(replace(cfg, bias=False), shapes, "ckpt")
    tied = VARIANTS["rope-rmsnorm-gelu"]
    stored_once = {k: tuple(v.shape) for k, v in build_model(tied).state_dict().items()}
    del stored_once["head.weight"]
    check_shapes(tied, stored_once, "ckpt")  # a tied head may be stored once


def test_a_file_replaced_while_it_is_read_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training replaces best.safetensors (atomically) while `lmcli sample` reads it: the
    metadata and the tensors must come from one file, never the old hash with new tensors."""
    import torch

    from lmcli import weights

    cfg = VARIANTS["rope-rmsnorm-gelu"]
    path, newer = tmp_path / "best.safetensors", tmp_path / "newer.safetensors"
    torch.manual_seed(0)
    save_weights(path, build_model(cfg).state_dict(), cfg, step=5)
    save_weights(newer, build_model(cfg).state_dict(), cfg, step=10)
    import safetensors

    real_safe_open: Any = safetensors.safe_open
    replaced: list[bool] = []

    class ReplacedAfterReading:
        """safe_open, after which the writer wins the race once: the metadata was read from
        the old file, and the path now names the new one."""

        def __init__(self, name: str, **kw: object) -> None:
            self.inner = real_safe_open(name, **kw)

        def __enter__(self) -> Any:
            return self.inner.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.inner.__exit__(*exc)
            if not replaced:
                os.replace(newer, path)
                replaced.append(True)

    monkeypatch.setattr("safetensors.safe_open", ReplacedAfterReading)
    read = weights.read_weights(path)  # no "damaged": the newer file, read whole
    assert replaced and read.step == 10
