"""The C transformer (decode.c) as an Engine: the binding, and nothing else.

It passes decode.c the config (ints and strings) and every tensor of a weights file: its name,
shape and a pointer into the memory-mapped file (lmcli.weights.read_weights checked each one's
dtype and shape against the config first; decode.c checks the shapes again, by name, before it
reads). decode.c keeps the KV cache, the tables and its scratch; this keeps the arrays it points
into alive. The two structs below are declared in decode.c too: `check_layout` compares their
sizes and field offsets with the compiled file's, and a mismatch means no C engine.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from lmcli.config import ModelConfig
from lmcli.errors import ConfigError, InputError
from lmcli.weights import Weights

Array = np.ndarray[Any, np.dtype[Any]]
_int, _str, _ptr = ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p
INT_FIELDS = ("vocab_size", "layers", "width", "heads", "kv_heads", "context", "window", "tie",
              "bias")  # fmt: skip
STR_FIELDS = ("pos", "norm", "norm_placement", "mlp", "window_pattern")


class _Config(ctypes.Structure):  # decode.c's Config
    _fields_ = [(name, _int) for name in INT_FIELDS] + [(name, _str) for name in STR_FIELDS]


class _Tensor(ctypes.Structure):  # decode.c's Tensor
    _fields_ = [("name", _str), ("rank", _int), ("shape", _int * 2), ("data", _ptr)]


class EngineUnavailable(Exception):
    """decode.c cannot run this model (its reason is shown, and torch runs it instead)."""


def declare(library: ctypes.CDLL) -> None:
    library.lm_layout.argtypes = [ctypes.POINTER(_int)]
    library.lm_layout.restype = _int
    library.lm_open.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(_Tensor), _int,
                                ctypes.c_char_p, _int]  # fmt: skip
    library.lm_open.restype = _ptr
    library.lm_reset.argtypes = [_ptr, _int]
    library.lm_reset.restype = _int
    library.lm_forward.argtypes = [_ptr, _ptr, _int, _int, _ptr]
    library.lm_forward.restype = _int
    library.lm_close.argtypes = [_ptr]
    library.lm_close.restype = None


def expected_layout() -> list[int]:
    """What decode.c's lm_layout reports if its structs are these."""
    c, t = _Config, _Tensor
    return [ctypes.sizeof(c), c.vocab_size.offset, c.bias.offset, c.pos.offset,
            c.window_pattern.offset, ctypes.sizeof(t), t.name.offset, t.rank.offset,
            t.shape.offset, t.data.offset]  # fmt: skip


def check_layout(library: ctypes.CDLL) -> None:
    out = (_int * 32)()
    count = library.lm_layout(out)
    if list(out[:count]) != expected_layout():
        raise EngineUnavailable("decode.c's structs do not match its binding")


class CTransformer:
    """Generation's Engine (lmcli/sampling/generate.py) over decode.c."""

    def __init__(self, library: ctypes.CDLL, weights: Weights) -> None:
        declare(library)
        check_layout(library)
        cfg = weights.config
        self.library, self.cfg, self.weights = library, cfg, weights
        self._strings = {name: str(getattr(cfg, name)).encode() for name in STR_FIELDS}
        values = {name: getattr(cfg, name) for name in INT_FIELDS}
        values.update(kv_heads=cfg.n_kv_heads, window=cfg.window or 0, tie=int(cfg.tie),
                      bias=int(cfg.bias))  # fmt: skip
        self._config = _Config(**values, **self._strings)
        self._names = [name.encode() for name in weights.arrays]
        tensors = (_Tensor * len(self._names))()
        for tensor, name, array in zip(tensors, self._names, weights.arrays.values(), strict=True):
            if array.dtype != np.float32 or array.ndim not in (1, 2):
                raise InputError(f"{weights.path}: {name.decode()} is not a float32 matrix")
            shape = (*array.shape, 0)[:2]
            tensor.name, tensor.rank, tensor.data = name, array.ndim, array.ctypes.data
            tensor.shape[0], tensor.shape[1] = shape
        self._tensors = tensors
        error = ctypes.create_string_buffer(256)
        handle = library.lm_open(ctypes.byref(self._config), tensors, len(self._names), error, 256)
        if not handle:
            raise EngineUnavailable(error.value.decode(errors="replace") or "lm_open failed")
        self.handle = handle
        self.batch = 0

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.library.lm_close(self.handle)
            self.handle = None

    @property
    def max_positions(self) -> int:
        return self.cfg.context

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def config(self) -> ModelConfig:
        return self.cfg

    def start(self, tokens: Array) -> Array:
        """A fresh cache (positions restart at 0) and a forward over tokens (B, T)."""
        batch = tokens.shape[0]
        if self.library.lm_reset(self.handle, batch) != 0:
            raise MemoryError(f"no memory for a KV cache of {batch} samples")
        self.batch = batch
        return self._forward(tokens)

    def step(self, tokens: Array) -> Array:
        return self._forward(tokens[:, None])

    def recompute(self, tokens: Array) -> Array:
        """A full forward that keeps nothing: it replaces the cache, which only steps read."""
        return self.start(tokens)

    def _forward(self, tokens: Array) -> Array:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        B, T = tokens.shape
        logits = np.empty((B, self.cfg.vocab_size), np.float32)
        status = self.library.lm_forward(self.handle, tokens.ctypes.data, B, T, logits.ctypes.data)
        if status == -1:
            raise IndexError("a token id outside the vocabulary")
        if status == -2:
            raise ConfigError(f"more positions than --context {self.cfg.context}")
        if status == -3:
            raise ValueError("a batch the cache was not made for (start first)")
        if status == -4:
            raise MemoryError("decode.c ran out of memory")
        return logits
