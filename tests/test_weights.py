"""The torch-free table of a model's weights is the torch model's state dict."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lmcli.errors import InputError
from lmcli.models import build_model
from lmcli.weights import check_shapes, expected_shapes, parameter_count, table_bytes

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
