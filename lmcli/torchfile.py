"""Read a `torch.save` file without importing torch: tensors come back as numpy arrays.

`import torch` costs seconds; sampling on the CPU needs only the weights. The format (torch >= 1.6)
is an uncompressed zip whose members share one prefix (the file's stem at save time, "archive" for
a file object):

    <prefix>/data.pkl     the object, pickled (protocol 2)
    <prefix>/data/<key>   one storage per key: its raw bytes, in the order of <prefix>/byteorder
    <prefix>/byteorder    "little" or "big" (absent in old files: little)

In data.pkl a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks)`, where storage is a persistent id `("storage", torch.FloatStorage,
key, location, numel)`; an nn.Parameter wraps that in `torch._utils._rebuild_parameter`, and a
state dict is a `collections.OrderedDict`. Tensors of one storage (tied weights) share it.

Safety: unpickling can call any importable function, so `find_class` admits only those names and
maps them to the local stand-ins below; any other global is refused before anything runs. Size,
stride and offset are checked against the storage, so a crafted file cannot read outside it.
Contiguous tensors come back as views of their storage (tied weights share memory, as in torch);
other views are copied. Every array is writable and in native byte order.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmcli.errors import InputError

Array = np.ndarray[Any, np.dtype[Any]]


@dataclass(frozen=True)
class _StorageKind:
    """What a storage class such as torch.FloatStorage stands for: the element type on disk."""

    dtype: str  # numpy's name of the stored element ("bfloat16" is read as uint16 bits)


@dataclass(frozen=True)
class _Storage:
    """A storage read from the zip; only persistent_load makes one, so a tensor's is genuine."""

    kind: _StorageKind
    array: Array  # 1-d, native byte order, its dtype that of the tensors that view it


class _Refused(Exception):
    """The file asks for something torch.save never writes: refused, not guessed at."""


_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}  # fmt: skip
ByteOrder = Literal["<", ">"]
_ORDERS: dict[str, ByteOrder] = {"little": "<", "big": ">"}


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> Array:
    if not isinstance(storage, _Storage):
        raise _Refused("a tensor without a storage record")
    shaped = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
    if not (shaped and all(type(d) is int and d >= 0 for d in (offset, *size, *stride))):
        raise _Refused(f"a tensor of offset {offset!r}, size {size!r}, stride {stride!r}")
    data = storage.array
    numel = math.prod(size)
    if numel == 0:
        return np.empty(size, data.dtype)
    # The last element must lie inside the storage, and a tensor may not repeat elements (an
    # expand()ed view): copying one would turn a small file into an arbitrarily large array.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size or numel > data.size:
        raise _Refused(f"a tensor of size {size} and stride {stride} outside its storage")
    step = data.itemsize
    view = np.ndarray(size, data.dtype, data, offset * step, tuple(s * step for s in stride))
    # Not np.ascontiguousarray: it turns a 0-d tensor into shape (1,).
    return view if view.flags.c_contiguous else view.copy()


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageKind(dtype) for name, dtype in _STORAGES.items()},
}


def _decode(raw: bytes, kind: _StorageKind, numel: int, order: ByteOrder) -> Array:
    """The storage's elements in native order, as a writable copy of the zip member's bytes."""
    if kind.dtype == "bfloat16":
        # bfloat16 is the high half of a float32: shifting its bits up is exact.
        bits = np.frombuffer(raw, np.dtype("u2").newbyteorder(order), numel)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if kind.dtype == "bool":
        return np.frombuffer(raw, np.uint8, numel) != 0
    dtype = np.dtype(kind.dtype)
    return np.frombuffer(raw, dtype.newbyteorder(order), numel).astype(dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(
        self, data: bytes, archive: zipfile.ZipFile, prefix: str, order: ByteOrder
    ) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._order = archive, prefix, order
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise _Refused(f"it asks for {module}.{name}, which a file of tensors never needs")
        return _ALLOWED[module, name]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused(f"an unknown record {str(pid)[:60]}")
        # The location ("cpu", "cuda:0") does not matter: every array lives on the CPU.
        _, kind, key, _location, numel = pid
        sized = type(numel) is int and numel >= 0
        if not (isinstance(kind, _StorageKind) and isinstance(key, str) and sized):
            raise _Refused(f"a malformed storage record {str(pid)[:60]}")
        if key not in self._storages:
            raw = _member(self._archive, f"{self._prefix}data/{key}")
            self._storages[key] = _Storage(kind, _decode(raw, kind, numel, self._order))
        storage = self._storages[key]
        if storage.kind != kind or storage.array.size != numel:
            raise _Refused(f"storage {key} read as two different types or sizes")
        return storage


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)  # KeyError: reported as a missing record
    if info.compress_type != zipfile.ZIP_STORED:
        # torch never compresses; a compressed member could inflate to any size.
        raise _Refused(f"{name} is compressed")
    return archive.read(info)


def read_torch_file(path: Path) -> Any:
    """The object `torch.save` wrote to `path`, every tensor a numpy array (see the module doc)."""
    if not path.is_file():
        raise InputError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError("no <name>/data.pkl inside the zip")
            prefix = pickles[0].removesuffix("data.pkl")
            order = "little"
            if f"{prefix}byteorder" in names:
                order = _member(archive, f"{prefix}byteorder").decode("ascii")
            if order not in _ORDERS:
                raise ValueError(f"byteorder {order[:20]!r}")
            data = _member(archive, pickles[0])
            return _Unpickler(data, archive, prefix, _ORDERS[order]).load()
    except MemoryError:
        raise
    except _Refused as exc:
        raise InputError(
            f"{path}: refused: not a plain torch.save file of tensors ({exc})",
            hint="only dicts, lists, numbers, strings and tensors are read; never other code",
        ) from None
    except Exception as exc:
        # Whatever a damaged or foreign file trips on (BadZipFile, a CRC mismatch, EOFError,
        # UnpicklingError, KeyError for a missing record, ...) means one thing: unreadable.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: not a readable torch.save file (truncated or foreign: {first[:120]})",
            hint="lmcli reads the zip files torch >= 1.6 writes, such as a run's best.pt",
        ) from None
