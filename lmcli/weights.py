"""A model's weights as a .safetensors file, and their names and shapes without torch.

The file is what Hugging Face writes: a JSON header (each tensor's dtype, shape and byte
offsets, and string metadata) and the raw little-endian tensors. The tensors are named as the
torch model's `state_dict()` names them (a tied head is stored once, as `wte.weight`); the
metadata holds `"format": "pt"` (so other loaders accept the file), the model's config, the
training step, and a sha256 of the tensors, checked on every load (a damaged file is refused).
Every tool reads these files: `safetensors.numpy.load_file`, `safetensors.torch.load_model(...,
strict=True)`, and lmcli's C engine, which maps them without a copy (`read_weights`).

`expected_shapes(cfg)` is the state dict's layout derived from the config alone, so that
weights read without torch are checked tensor by tensor before an engine takes a pointer into
them: a config that contradicts its weights is refused, not run. tests/test_weights.py holds it
equal to the torch models' state dicts for every variant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from lmcli import __version__
from lmcli.config import ModelConfig
from lmcli.errors import InputError
from lmcli.files import FORMAT_VERSION, atomic_write, cache_dir

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]
Array = np.ndarray[Any, np.dtype[Any]]


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


def tied_name(cfg: ModelConfig) -> str:
    """The name a tied head's one matrix is stored under: the embedding's."""
    return "wte.weight" if cfg.model == "transformer" else "embed.weight"


def parameter_count(cfg: ModelConfig) -> int:
    """The model's parameters (a tied head once), from its config alone: instant even for a
    config of thousands of layers, which take seconds to build even on torch's meta device."""
    shapes = expected_shapes(cfg)
    if cfg.tie:
        shapes.pop("head.weight")
    return sum(int(np.prod(shape)) for shape in shapes.values())


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


def content_hash(arrays: Mapping[str, Array]) -> str:
    """sha256 over the tensors in name order (name, shape and bytes of each): the same for a
    file and for the model it came from, whatever order a writer lays the tensors out in."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


# -- writing (torch) ---------------------------------------------------------------------------


def save_weights(
    path: Path, state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, **facts: object
) -> None:
    """A model's weights (its state dict) as a safetensors file, written atomically; `facts`
    (the step, the validation loss) go into the metadata beside the config and the hash."""
    import safetensors.torch

    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    if cfg.tie:
        state.pop("head.weight")  # the same matrix as the embedding: stored once
    arrays = {k: v.numpy() for k, v in state.items()}
    metadata = {
        "format": "pt",
        "lmcli_version": __version__,
        "lmcli_schema": str(FORMAT_VERSION),  # lmcli 0.1 wrote no weights files
        "lmcli_config": json.dumps(dataclasses.asdict(cfg)),
        "lmcli_sha256": content_hash(arrays),
        **{f"lmcli_{k}": json.dumps(v) for k, v in facts.items()},
    }
    data = safetensors.torch.save(state, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


# -- reading (no torch) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """A weights file, read: its config, its tensors (read-only views of the mapped file, no
    copy), and the facts its metadata records."""

    path: Path
    config: ModelConfig
    arrays: dict[str, Array]
    facts: dict[str, Any]

    @property
    def step(self) -> int | None:
        step = self.facts.get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    @property
    def params(self) -> int:
        return sum(a.size for a in self.arrays.values())


# How often read_weights opens a file again that was replaced while it read it.
REREADS = 5


def read_weights(path: Path) -> Weights:
    """Open a weights file without torch: validated by the safetensors package (header, dtypes,
    offsets inside the file), every tensor float32 and of the shape its config implies, and the
    content hash the one recorded at save."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise InputError(f"no weights file at {path}")
    # Training replaces best.safetensors atomically while `lmcli sample` may be reading it:
    # safe_open and the memory map must see the same file, so the map is taken from the file
    # opened first, and safe_open's reading counts only if the path still names that file.
    for _ in range(REREADS):
        try:
            with path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                with safe_open(str(path), framework="numpy") as f:
                    metadata = f.metadata() or {}
                if os.stat(path).st_ino != inode:
                    continue  # replaced meanwhile: read the new file
                arrays = _map_tensors(handle, path)
                break
        except (SafetensorError, OSError) as exc:
            raise InputError(
                f"{path} is not a readable safetensors file ({str(exc)[:120]})"
            ) from None
    else:
        raise InputError(f"{path} was replaced {REREADS} times while being read: try again")
    cfg = _config_of(metadata, path)
    check_shapes(cfg, {k: a.shape for k, a in arrays.items()}, str(path))
    if metadata.get("lmcli_sha256") != content_hash(arrays):
        raise InputError(f"{path} is damaged: its tensors do not match the sha256 it recorded")
    facts = {}
    for key, value in metadata.items():
        if key.startswith("lmcli_") and key not in ("lmcli_config", "lmcli_sha256"):
            try:
                facts[key.removeprefix("lmcli_")] = json.loads(value)
            except json.JSONDecodeError:
                facts[key.removeprefix("lmcli_")] = value
    return Weights(path=path, config=cfg, arrays=arrays, facts=facts)


def _config_of(metadata: dict[str, str], path: Path) -> ModelConfig:
    from lmcli.config import model_config_from_json

    if "lmcli_config" not in metadata:
        raise InputError(f"{path} holds no lmcli model config: not a weights file of lmcli's")
    return model_config_from_json(metadata["lmcli_config"], str(path))


def _map_tensors(handle: IO[bytes], path: Path) -> dict[str, Array]:
    """Each tensor as a read-only float32 view of the memory-mapped file `handle`. The header
    was validated by safe_open; here only its offsets are read, to point into the file."""
    # A plain ndarray view of the map: arithmetic on np.memmap instances pays for the subclass.
    # The map outlives the handle (mmap keeps the file, even once replaced, until unmapped).
    mapped = np.memmap(handle, dtype=np.uint8, mode="r").view(np.ndarray)
    (length,) = struct.unpack("<Q", mapped[:8].tobytes())
    header = json.loads(mapped[8 : 8 + length].tobytes())
    start = 8 + length
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise InputError(f"{path}: {name} is {info['dtype']}; lmcli's weights are float32")
        begin, end = info["data_offsets"]
        view = mapped[start + begin : start + end].view("<f4")
        arrays[name] = view.reshape(info["shape"])
    return arrays


# -- lmcli 0.1's checkpoints (torch.save files), converted once ---------------------------------


@dataclass(frozen=True)
class Resolved:
    """The weights file a run directory or a path stands for."""

    path: Path  # a .safetensors file
    note: str | None  # how an lmcli 0.1 checkpoint was converted into it, if one was


def resolve_weights(path: Path) -> Resolved:
    """The .safetensors file of a run directory (best, else last) or the file given; an lmcli
    0.1 checkpoint (a torch.save file) is read once with torch.load(weights_only=True) and its
    weights saved beside it (or in lmcli's cache, where its folder cannot be written)."""
    from lmcli.rundir import find_weights

    found = find_weights(path)
    if found.suffix != ".pt":
        return Resolved(found, None)
    digest = hashlib.sha256(found.read_bytes()).hexdigest()
    targets = (found.with_suffix(".safetensors"),
               cache_dir() / "converted" / f"{digest[:24]}.safetensors")  # fmt: skip
    for target in targets:
        if _converted_from(target) == digest:
            return Resolved(target, None)
    state_dict, cfg, step = _read_legacy(found)
    for target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            save_weights(target, state_dict, cfg, step=step, converted_from=digest)
        except OSError:
            continue
        note = (f"{found} is an lmcli 0.1 checkpoint: read once with "
                f"torch.load(weights_only=True), its weights are now {target}")  # fmt: skip
        return Resolved(target, note)
    raise InputError(f"cannot write the converted weights of {found} (beside it or in the cache)")


def _converted_from(target: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(target), framework="numpy") as f:
            value = (f.metadata() or {}).get("lmcli_converted_from")
    except (SafetensorError, OSError):
        return None
    return json.loads(value) if value else None


def _read_legacy(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, int | None]:
    from lmcli.checkpoints import load_checkpoint
    from lmcli.config import model_config_from_json

    state = load_checkpoint(path)
    raw = state.get("model_config")
    if not isinstance(raw, str):
        raise InputError(f"{path} has no model config: not a checkpoint of an lmcli model")
    cfg = model_config_from_json(raw, str(path))
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(hasattr(v, "shape") for v in weights.values()):
        raise InputError(f"{path} holds no model weights")
    check_shapes(cfg, {k: tuple(v.shape) for k, v in weights.items()}, str(path))
    step = state.get("step")
    return weights, cfg, step if isinstance(step, int) else None
