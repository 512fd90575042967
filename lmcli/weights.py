"""The weights of a model, by name and shape, without torch.

`expected_shapes(cfg)` is the torch model's `state_dict()` layout (names and shapes) derived from
its config alone, so that a checkpoint read without torch is checked tensor by tensor before an
engine takes a pointer into it: a config that contradicts its weights is refused, not run.
tests/test_weights.py holds it equal to the torch models' state dicts for every variant.
"""

from __future__ import annotations

from collections.abc import Mapping

from lmcli.config import ModelConfig
from lmcli.errors import InputError

Shape = tuple[int, ...]


def mlp_hidden(cfg: ModelConfig) -> int:
    """The MLP's inner width: 4C, or for SwiGLU 8C/3 rounded up to a multiple of 8."""
    return 8 * -(-cfg.width // 3) if cfg.mlp == "swiglu" else 4 * cfg.width


def expected_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    """Every tensor of the model's state dict and its shape (a tied head is listed too, as
    torch's state dict lists it)."""
    if cfg.model != "transformer":
        return _recurrent_shapes(cfg)
    C, V, D = cfg.width, cfg.vocab_size, cfg.width // cfg.heads
    kv = cfg.n_kv_heads * D
    hidden = mlp_hidden(cfg)
    fc_out = 2 * hidden if cfg.mlp == "swiglu" else hidden
    norm_bias = cfg.norm == "layernorm" and cfg.bias
    shapes: dict[str, Shape] = {"wte.weight": (V, C)}
    if cfg.pos == "learned":
        shapes["wpe.weight"] = (cfg.context, C)
    for i in range(cfg.layers):
        p = f"blocks.{i}."
        linears = {"attn.qkv": (C + 2 * kv, C), "attn.proj": (C, C), "mlp.fc": (fc_out, C),
                   "mlp.proj": (C, hidden)}  # fmt: skip
        for norm in ("norm1", "norm2"):
            shapes[f"{p}{norm}.weight"] = (C,)
            if norm_bias:
                shapes[f"{p}{norm}.bias"] = (C,)
        for name, shape in linears.items():
            shapes[f"{p}{name}.weight"] = shape
            if cfg.bias:
                shapes[f"{p}{name}.bias"] = (shape[0],)
    if cfg.norm_placement == "pre":
        shapes["norm.weight"] = (C,)
        if norm_bias:
            shapes["norm.bias"] = (C,)
    shapes["head.weight"] = (V, C)
    return shapes


def parameter_count(cfg: ModelConfig) -> int:
    """The model's parameters (a tied head once), from its config alone: instant even for a
    config of 100,000 layers, which takes minutes to build even on torch's meta device."""
    shapes = expected_shapes(cfg)
    if cfg.tie:
        shapes.pop("head.weight")
    total = 0
    for shape in shapes.values():
        size = 1
        for n in shape:
            size *= n
        total += size
    return total


def table_bytes(cfg: ModelConfig) -> int:
    """The float32 tables a model keeps beside its weights: RoPE's cos and sin, or the
    sinusoidal positions."""
    if cfg.model != "transformer":
        return 0
    if cfg.pos == "rope":
        return 4 * cfg.context * (cfg.width // cfg.heads)  # cos and sin, D/2 each
    if cfg.pos == "sinusoidal":
        return 4 * cfg.context * cfg.width
    return 0


def _recurrent_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    C, V = cfg.width, cfg.vocab_size
    E = cfg.embedding or C
    gates = (4 if cfg.model == "lstm" else 3) * C
    shapes: dict[str, Shape] = {"embed.weight": (V, E)}
    for i in range(cfg.layers):
        shapes[f"rnn.weight_ih_l{i}"] = (gates, E if i == 0 else C)
        shapes[f"rnn.weight_hh_l{i}"] = (gates, C)
        shapes[f"rnn.bias_ih_l{i}"] = (gates,)
        shapes[f"rnn.bias_hh_l{i}"] = (gates,)
    shapes["head.weight"] = (V, C)
    return shapes


def check_shapes(cfg: ModelConfig, shapes: Mapping[str, Shape], where: str) -> None:
    """Refuse weights whose names or shapes are not the ones `cfg` implies (a tied head may be
    stored once, under the embedding's name)."""
    expected = expected_shapes(cfg)
    if cfg.tie and "head.weight" not in shapes:
        expected.pop("head.weight")
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise InputError(f"{where} lacks the weight {missing[0]!r} its config needs")
    unknown = sorted(set(shapes) - set(expected))
    if unknown:
        raise InputError(f"{where} holds a weight its config has no place for: {unknown[0]!r}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise InputError(
                f"{where}: the weights do not fit its model config ({name} is "
                f"{tuple(shapes[name])}, the config needs {shape})"
            )
